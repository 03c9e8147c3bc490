"""Stage retrain: train fresh models on the pruned subsets (use case 3; paper-protocols §4.4-4.6).

A job trains every subset of one unit (:func:`lpntk.plan.retrain_units`) for the seeds of its shard, given only what
it reads of the pruning block (:func:`lpntk.dag.retrain_job`) and the subsets files of its subsets' prune groups.
Each finished (subset, seed) run is kept in a progress folder beside the output, and the run in flight saves a
resumable state every ``train.resume_every`` epochs there, so a killed job (a SLURM preemption, ``scancel``, a power
cut) resumes where it stopped when rerun, with the same results; the folder is removed when the job completes.

With ``pruning.retrain.lockstep: true`` the pending seeds of a subset train together (:mod:`lpntk.lockstep`: one
vectorised step for all of them; with dropout active the masks are drawn differently from separate runs), tagged
``lpntk.lockstep`` in MLflow; it needs ``batch_seeds: true`` (a job that holds several seeds). Each seed trains on
its own subset (selected from its own training run); seeds whose subsets differ in size train apart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..dag import retrain_job
from ..data import Split, load_prepared
from ..io import load_json, load_npz, save_json
from ..lockstep import train_lockstep
from ..plan import fmt
from ..pruning import accuracy_summary
from ..train import Recipe, seed_everything, select_device, train_model
from .common import log, tracking_run
from .torch_setup import build_from_config, set_threads

__all__ = ["subset_split", "retrain_recipe", "retrain_stage"]


def subset_split(train: Split, indices) -> Split:
    """The training samples with the given ORIGINAL indices, in training-split order (error if any is missing)."""
    indices = np.asarray(indices, dtype=np.int64)
    all_index = train.index.numpy()
    mask = np.isin(all_index, indices)
    if int(mask.sum()) != len(np.unique(indices)):
        missing = np.setdiff1d(indices, all_index)[:5].tolist()
        raise ValueError(f"subset holds original indices not in the training split (e.g. {missing}); rerun prune")
    return train.subset(np.flatnonzero(mask))


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.sort(np.asarray(a, dtype=np.int64))).tobytes()).hexdigest()[:16]


def retrain_recipe(cfg: Mapping, epochs: int) -> Recipe:
    """The dataset's training recipe for ``epochs`` epochs, selecting on validation, recording no scores."""
    return Recipe.from_config({**cfg["train"], "epochs": epochs, "score_epochs": [], "select": "val"}, cfg["augment"])


def _subsets_by_seed(
    subsets: Mapping[int, Sequence[str | os.PathLike]] | Sequence[str | os.PathLike], seeds: Sequence[int], shard: str
) -> dict[int, dict[str, np.ndarray]]:
    """{seed: {subset name: original indices}} from the prune stage's files of each seed (a mapping seed -> files),
    or from one file per seed in the shard's seed order (a sequence)."""
    if isinstance(subsets, Mapping):
        by_seed = {int(s): list(files) for s, files in subsets.items()}
        if sorted(by_seed) != sorted(seeds):
            raise ValueError(f"expected the subsets files of the seeds of shard {shard!r} ({seeds}), got {subsets}")
    else:
        if isinstance(subsets, str | os.PathLike) or len(subsets) != len(seeds):
            raise ValueError(f"expected one subsets file per seed of shard {shard!r} ({seeds}), got {subsets}")
        by_seed = {s: [path] for s, path in zip(seeds, subsets, strict=True)}
    arrs: dict[int, dict[str, np.ndarray]] = {}
    for s in seeds:
        arrs[s] = {}
        for path in by_seed[s]:
            arrs[s].update(load_npz(path, what="pruned subsets"))
    return arrs


def retrain_stage(
    *,
    dataset: str,
    cfg: Mapping,
    unit: str,
    shard: str,
    data: Mapping[str, str | os.PathLike],
    subsets: Mapping[int, Sequence[str | os.PathLike]] | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
    job: Mapping | None = None,
) -> dict:
    """Train fresh models on every subset of one unit, one per seed of the shard.

    Each run uses the dataset's recipe (``pruning.retrain`` may override epochs and seeds, and
    ``pruning.small_clusters.epochs`` the epochs of the small-cluster experiment), validation and test
    splits from the prepared data (``data``: the prepared-data files), and no per-sample recording. ``job``: what
    the job reads of the pruning block (:func:`lpntk.dag.retrain_job`: the unit's subset specs with their epochs,
    the shard's seeds, the lockstep switch; None: from ``cfg``, which then needs its pruning block). ``subsets``: the
    prune stage's npz files of each seed of the shard ({seed: files}, or one file per seed in the shard's seed
    order): seed s trains on the subsets selected from its own training run; the full training set needs none.
    Writes ``output`` (JSON): per subset its description, size and index checksum, and per seed
    ``test_acc_best_val``, ``test_acc_last``, ``test_acc_max`` (official metric), ``val_acc_best``, ``best_epoch``
    and the per-epoch history. One MLflow run per subset and seed (rule ``retrain``; tags ``lpntk.method``,
    ``lpntk.keep``, ``lpntk.seed``, ``lpntk.subset``, ``lpntk.experiment``; metrics ``test_acc_best_val``,
    ``test_acc_last``, ``test_acc_max``).
    """
    set_threads(threads)
    job = retrain_job(cfg, unit, shard) if job is None else job
    specs, seeds, lockstep = list(job["subsets"]), [int(s) for s in job["seeds"]], bool(job["lockstep"])
    prep = load_prepared(data)
    if len(prep.val) == 0:
        raise ValueError(
            f"dataset {dataset!r}: retraining reports the test accuracy at the best validation epoch "
            f"and needs a validation split; set val_fraction > 0"
        )
    arrs = _subsets_by_seed(subsets, seeds, shard)
    for s in seeds:
        missing = [p["name"] for p in specs if p["method"] != "full" and p["name"] not in arrs[s]]
        if missing:
            raise ValueError(f"the subsets files of seed {s} have no subset {missing[:4]}; rerun the prune step")
    device = select_device(cfg.get("device", "auto"))
    progress = Path(output).with_name(f".{Path(output).stem}.progress")
    records = []
    for spec in specs:
        name = spec["name"]
        trains = {s: prep.train if spec["method"] == "full" else subset_split(prep.train, arrs[s][name]) for s in seeds}
        recipe = retrain_recipe(cfg, int(spec["epochs"]))
        records.append(
            _retrain_subset(dataset, cfg, spec, trains, prep, recipe, device, mlflow_cfg, progress, lockstep)
        )
    epochs = max((int(p["epochs"]) for p in specs if p["experiment"] != "small_clusters"), default=None)
    out = {"dataset": dataset, "unit": unit, "shard": shard, "epochs": epochs, "subsets": records}
    save_json(output, out)
    shutil.rmtree(progress, ignore_errors=True)
    return out


def _retrain_subset(
    dataset: str,
    cfg: Mapping,
    spec: Mapping,
    trains: Mapping[int, Split],
    prep,
    recipe: Recipe,
    device,
    mlflow_cfg: Mapping | None,
    progress: Path,
    lockstep: bool = False,
) -> dict:
    """Every seed's run on its training subset (``trains[seed]``: the one selected from the seed's own training run,
    the same for every seed only for ``full`` and shared random draws). With ``lockstep`` (``pruning.retrain``) the
    pending seeds whose subsets have one size train together, each on its own subset."""
    subset = spec["name"]
    base_tags = {
        "method": spec["method"],
        "subset": subset,
        "experiment": spec["experiment"],
        "keep": fmt(spec["keep"]) if spec.get("keep") is not None else "realised",
        "device": str(device),
        "draw": "per_seed" if spec.get("per_seed") else "shared",
        "precision": recipe.precision,
        "lockstep": str(lockstep).lower(),
    }
    if spec["experiment"] == "small_clusters":
        base_tags.update(
            {
                "data_fraction": fmt(spec["data_fraction"]),
                "remove": fmt(spec["remove"]),
                "kernel": spec.get("kernel", "full"),
            }
        )
    shas = {seed: _sha256(train.index.numpy()) for seed, train in trains.items()}
    keys = {
        seed: {"subset_sha256": shas[seed], "seed": seed, "epochs": recipe.epochs, "lockstep": lockstep}
        for seed in trains
    }
    runs: dict[int, dict] = {}
    for seed in trains:
        done = progress / f"{subset}-seed{seed}.json"
        if done.is_file():  # finished before the job was killed: same subset, seed, epochs and lockstep switch
            rec = load_json(done, what="retraining progress record")
            if rec.get("key") == keys[seed]:
                log.info("%s %s seed %d: already trained (progress record %s)", dataset, subset, seed, done)
                runs[seed] = rec["run"]
    pending = [seed for seed in trains if seed not in runs]
    # lockstep: the pending seeds grouped by the size of their subset (a shared subset, or per-seed draws of one
    # size train together, each on its own samples); else one seed at a time
    groups: dict[int, list[int]] = {}
    for seed in pending:
        groups.setdefault(len(trains[seed]) if lockstep else seed, []).append(seed)

    def finished(seed: int, run: dict) -> None:  # kept at once: a kill loses only the run in flight
        runs[seed] = {**run, "n_train": len(trains[seed]), "index_sha256": shas[seed]}
        save_json(progress / f"{subset}-seed{seed}.json", {"key": keys[seed], "run": runs[seed]})

    for group in groups.values():
        context = (dataset, cfg, subset, {**base_tags, "n_train": len(trains[group[0]])})
        if len(group) > 1:
            resume = progress / f"{subset}-seeds{'-'.join(map(str, group))}.resume.pt"
            shared = len({shas[seed] for seed in group}) == 1  # one subset: held once, not once per seed
            together = trains[group[0]] if shared else [trains[seed] for seed in group]
            for seed, run in _retrain_lockstep(
                *context, together, prep, recipe, group, device, mlflow_cfg, resume
            ).items():
                finished(seed, run)
        else:
            seed = group[0]
            resume = progress / f"{subset}-seed{seed}.resume.pt"
            finished(seed, _retrain_run(*context, trains[seed], prep, recipe, seed, device, mlflow_cfg, resume))
    ordered = [runs[seed] for seed in trains]
    return {
        "subset": subset,
        **{k: v for k, v in spec.items() if k != "name"},
        "n_train": float(np.mean([r["n_train"] for r in ordered])),
        "epochs": recipe.epochs,
        "runs": ordered,
    }


def _run_record(dataset, subset, seed, n_train, history, seconds) -> tuple[dict, dict]:
    """The MLflow metrics and the output record of one finished retraining run."""
    acc = accuracy_summary(history)
    log.info(
        "%s %s seed %d: n=%d, test acc %.4f at best val (epoch %d), last %.4f, max %.4f (%.1f s)",
        dataset,
        subset,
        seed,
        n_train,
        acc["test_acc_best_val"],
        acc["best_epoch"],
        acc["test_acc_last"],
        acc["test_acc_max"],
        seconds,
    )
    rows = [{k: h[k] for k in ("epoch", "lr", "train_loss", "val_acc", "test_acc") if k in h} for h in history]
    return {**acc, "n_train": n_train, "seconds": seconds}, {"seed": int(seed), **acc, "history": rows}


def _epoch_metrics(row: Mapping) -> dict:
    return {k: row[k] for k in ("val_acc", "test_acc", "train_loss", "lr") if k in row}


def _retrain_lockstep(
    dataset, cfg, subset, tags, trains, prep, recipe, seeds, device, mlflow_cfg, resume: Path
) -> dict[int, dict]:
    """The seeds of one subset trained together on ``trains``: one split for all, or each seed's own (all of one
    size; :func:`lpntk.lockstep.train_lockstep`), then one MLflow run per seed with its per-epoch series (tag
    ``lpntk.lockstep`` = true)."""
    t0 = time.perf_counter()
    results = train_lockstep(
        lambda: build_from_config(cfg, prep.info),
        trains,
        recipe,
        seeds,
        mean=prep.info.mean,
        std=prep.info.std,
        val=prep.val,
        test=prep.test,
        device=device,
        record=False,
        resume_path=resume,
    )
    seconds = (time.perf_counter() - t0) / len(seeds)
    out = {}
    for seed, result in zip(seeds, results, strict=True):
        params = {"subset": subset, "retrain_epochs": recipe.epochs}
        name = f"retrain-{dataset}-{subset}-seed{seed}"
        metrics, out[seed] = _run_record(dataset, subset, seed, len(result.dynamics["index"]), result.history, seconds)
        with tracking_run(
            "retrain", dataset, cfg, mlflow_cfg, seed=seed, tags=tags, params=params, run_name=name
        ) as run:
            run.log_metric_history(
                (k, v, int(row["epoch"])) for row in result.history for k, v in _epoch_metrics(row).items()
            )
            run.log_metrics(metrics)
    return out


def _retrain_run(dataset, cfg, subset, tags, train, prep, recipe, seed, device, mlflow_cfg, resume: Path) -> dict:
    params = {"subset": subset, "retrain_epochs": recipe.epochs}
    name = f"retrain-{dataset}-{subset}-seed{seed}"
    with tracking_run("retrain", dataset, cfg, mlflow_cfg, seed=seed, tags=tags, params=params, run_name=name) as run:
        seed_everything(seed)
        model = build_from_config(cfg, prep.info)
        t0 = time.perf_counter()
        result = train_model(
            model,
            train,
            recipe,
            seed,
            mean=prep.info.mean,
            std=prep.info.std,
            val=prep.val,
            test=prep.test,
            device=device,
            record=False,
            on_epoch=lambda row: run.log_metrics(_epoch_metrics(row), step=int(row["epoch"])),
            resume_path=resume,
        )
        metrics, record = _run_record(dataset, subset, seed, len(train), result.history, time.perf_counter() - t0)
        run.log_metrics(metrics)
    return record
