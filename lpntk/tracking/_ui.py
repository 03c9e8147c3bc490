"""What the MLflow UI shows: the experiment kind, the links that open the runs table, the invocation's description.

MLflow 3.x's UI opens an experiment on one of two layouts: model training (the runs table) or GenAI (an overview of
traces and token usage, where this package's runs leave nothing to see). Its code reads the experiment tag
``mlflow.experimentKind`` (``custom_model_development`` or ``genai_development``) for the kind, except where its
workflow-based navigation is on -- as in 3.17, whose sidebar has a "GenAI apps & agents" / "Machine learning"
switch: there the kind follows the UI's *workflow type* alone, the URL's ``workflowType`` query parameter, else the
browser's remembered choice (local storage ``mlflow.workflowType``), else ``genai``. A fresh browser therefore
opens every experiment on its GenAI overview; ``?workflowType=machine_learning`` opens the runs table, and the UI
keeps the parameter while one moves between tabs. :func:`experiment_url` and :func:`run_url` build such links; the
experiments also carry the tag (:data:`EXPERIMENT_KIND`) for the UIs that read it.

Imports nothing but the standard library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

#: The experiment tag MLflow's UI reads for an experiment's kind (MLflow's ``EXPERIMENT_KIND_TAG_KEY``).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: The kind of every lpntk experiment: model training, whose page is the runs table.
EXPERIMENT_KIND = "custom_model_development"
#: The UI's query parameter that selects the model-training layout whatever the browser remembers.
UI_QUERY = "workflowType=machine_learning"
#: The runs table's order in :func:`experiment_url`: by run name (rule, dataset, seed), which also lists every job's
#: run on its own row (ordered by creation, the default, the table folds them under their collapsed invocation run).
RUNS_ORDER = "orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
#: The address ``mlflow ui`` serves by default.
DEFAULT_UI = "http://127.0.0.1:5000"
#: The run tag MLflow shows as a run's description (MLflow's ``MLFLOW_RUN_NOTE``).
NOTE_TAG = "mlflow.note.content"
#: Parent-run tags ``lpntk.note.<section>`` that jobs add; the invocation appends them to its description.
NOTE_PREFIX = "lpntk.note."
#: MLflow's limit on a tag value (characters).
MAX_TAG_LENGTH = 8000


def ui_base(uri: str) -> str:
    """Where the UI of the store at ``uri`` is served: the server itself for an http(s) URI, else the address of a
    plain ``mlflow ui --backend-store-uri <uri>``."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def experiment_url(experiment_id: str, base: str = DEFAULT_UI) -> str:
    """The link that opens the experiment on its runs table (in MLflow 3.x's model-training layout), every job's run
    on its own row, by run name."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_QUERY}&{RUNS_ORDER}"


def run_url(experiment_id: str, run_id: str, base: str = DEFAULT_UI) -> str:
    """The link that opens one run's page (its description, params, metrics, artifacts)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"


def ui_lines(uri: str, runs: Mapping[str, Mapping[str, str]], prefix: str = "lpntk") -> list[str]:
    """The lines an invocation prints at its end: how to serve the store and, per dataset, the runs-table link."""
    base = ui_base(uri)
    lines = []
    if base == DEFAULT_UI:
        lines.append(f"MLflow: serve the runs with `mlflow ui --backend-store-uri {uri}`, then open")
    else:
        lines.append("MLflow: the runs are on the server; open")
    for ds, entry in runs.items():
        exp = f"{prefix}-{ds}" if prefix else ds
        lines.append(f"  {exp}: {experiment_url(entry['experiment_id'], base)}")
    lines.append(f"  (the `{UI_QUERY}` part opens the runs table instead of MLflow's GenAI overview)")
    return lines


def invocation_note(children: Iterable[tuple[str, str, Mapping[str, str]]], notes: Mapping[str, str]) -> str:
    """The parent run's description (Markdown): what the invocation produced, then the jobs' notes.

    ``children``: (rule, status, tags) of every job run of the invocation; their ``lpntk.output.<name>`` tags name the
    files they wrote. ``notes``: section -> Markdown added by jobs (parent tags ``lpntk.note.<section>``), appended in
    section order. Kept under MLflow's tag limit (the outputs list is cut first)."""
    by_rule: dict[str, Counter] = {}
    outputs: dict[str, set[str]] = {}
    for rule, status, tags in children:
        by_rule.setdefault(rule, Counter())[status] += 1
        outputs.setdefault(rule, set()).update(v for k, v in tags.items() if k.startswith("lpntk.output."))
    total = sum(sum(c.values()) for c in by_rule.values())
    if not total:
        head = ["**lpntk workflow invocation**: no job ran (every output was up to date)."]
    else:
        statuses = Counter()
        for c in by_rule.values():
            statuses.update(c)
        state = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        head = [f"**lpntk workflow invocation**: {total} job run(s) ({state}).", "", "| rule | runs | status |"]
        head.append("|---|---|---|")
        for rule in sorted(by_rule):
            c = by_rule[rule]
            head.append(f"| {rule} | {sum(c.values())} | {', '.join(f'{n} {s}' for s, n in sorted(c.items()))} |")
    tail = []
    for section in sorted(notes):
        tail += ["", f"### {section}", "", notes[section].strip()]
    text = ""
    for most in (None, 20, 5, 1, 0):  # fewer files per rule until the text fits MLflow's tag limit
        text = "\n".join(head + _output_lines(outputs, most) + tail)
        if len(text) <= MAX_TAG_LENGTH:
            break
    return text[:MAX_TAG_LENGTH]


def _output_lines(outputs: Mapping[str, set[str]], most: int | None) -> list[str]:
    """The "Outputs" block: per rule its files, at most ``most`` of them (None: all) and how many more."""
    lines = []
    for rule in sorted(r for r in outputs if outputs[r]):
        files = sorted(outputs[rule])
        shown = files if most is None else files[:most]
        more = f" and {len(files) - len(shown)} more" if len(shown) < len(files) else ""
        lines.append(f"- **{rule}**: " + ", ".join(f"`{f}`" for f in shown) + more)
    return ["", "Outputs:", "", *lines] if lines else []
