"""MLflow tracking: one experiment per dataset, one run per workflow job, a parent run per invocation.

Conventions (``docs/design.md``):

* Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else the config's ``mlflow.tracking_uri``, else
  ``sqlite:///mlflow.db`` in the working directory. On a cluster point it at an ``mlflow server``; never
  put a SQLite file on NFS.
* :func:`init_store` (the Snakefile's ``onstart``) creates the store, one experiment per dataset and a
  parent run per dataset for this invocation, *before* any job runs: a fresh SQLite store races on schema
  creation, and ``mlflow.set_experiment`` races into the "Default" experiment under parallel jobs. The
  experiment ids and parent run ids reach the jobs through the environment variable ``LPNTK_MLFLOW_RUNS``.
* Every job opens a :class:`JobRun` with an explicit ``experiment_id``, tags ``lpntk.rule``,
  ``lpntk.dataset``, ``lpntk.seed`` (and any others), the config hash, git commit and package versions;
  its params are the job's resolved config; metrics carry their step; small outputs are attached as
  artifacts and large ones referenced by path (tags ``lpntk.output.<name>``).
* Metric names: every name a job logs is normalised once, here (:func:`metric_key`): ASCII letters, digits, ``_``,
  ``.`` and ``-`` only, every run of other characters (spaces, ``:``, ``/``, ``@``, quotes, ...) one ``_``
  (``"clusters_d0.05 seed 1_k0.5"`` is logged as ``clusters_d0.05_seed_1_k0.5``); two names of one run that meet
  in one key are an error. Filters name keys with ``.`` or ``-`` in backticks (``metrics.`n_random-k0.5` > 0``).
* Units: an accuracy (a metric with ``acc`` as a word of its name: ``val_acc``, ``test_acc_best_val``, ...) is a
  fraction in [0, 1] in MLflow, as the training history and the results' JSON hold it; the tables and figures print
  percent and say so in their headers and axis labels. A run logging an accuracy outside [0, 1] warns once per key.
* Jobs that compute almost nothing spool their run to a JSON record instead of importing mlflow; the invocation
  replays the records into the store when it ends (``onsuccess`` / ``onerror``), or the next one at its start.
* Every invocation run records its host and process (``lpntk.host``, ``lpntk.pid``, ``lpntk.pid_start``); the next
  invocation marks the runs of one killed hard (its process gone from this host) KILLED, and an invocation marks
  its own job runs left RUNNING (their job was killed) KILLED when it ends, so the UI never shows phantom runs.

* Every experiment is tagged as model training (``mlflow.experimentKind``); MLflow 3.17's UI opens an experiment on
  its runs table only with ``?workflowType=machine_learning`` in the link (:mod:`._ui`), which the invocation prints
  at its end (:func:`finish_invocation`). The invocation run's description (``mlflow.note.content``) lists the job
  runs and the files they wrote, followed by the notes jobs add (:meth:`JobRun.add_invocation_note`, or any tag with
  :meth:`JobRun.set_parent_tags`; spooled runs carry theirs to the replay).

All client calls are retried with back-off on SQLite's "database is locked".

Only this package imports mlflow, and only inside the functions that talk to the store (importing it costs about
2 s): ``_store`` (URI, client, retries, config hash, versions), ``_invocation`` (parent runs, killed invocations,
the spool), ``_run`` (:class:`JobRun`); ``_ui`` (experiment kind, UI links, the invocation's description) imports
nothing.
"""

from ._invocation import close_dead_invocations, describe_invocation, finish_invocation, init_store, replay_spool
from ._run import JobRun, Terminated
from ._store import (
    RUNS_ENV,
    check_cluster_uri,
    config_hash,
    experiment_name,
    flatten,
    git_commit,
    metric_key,
    package_versions,
    tracking_uri,
)
from ._ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_url, run_url, ui_base

__all__ = [
    "RUNS_ENV",
    "tracking_uri",
    "experiment_name",
    "init_store",
    "finish_invocation",
    "JobRun",
    "config_hash",
    "flatten",
    "metric_key",
    "package_versions",
    "git_commit",
    "close_dead_invocations",
    "replay_spool",
    "check_cluster_uri",
    "Terminated",
    "describe_invocation",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "experiment_url",
    "run_url",
    "ui_base",
]
