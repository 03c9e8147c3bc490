"""Stage summary: ``results/summary.md``, every dataset's tables in one page, the authors' numbers beside ours.

The stage tables already carry the slides' numbers where the dataset is one the slides report (MNIST,
CIFAR-10); this page gathers them under one heading per dataset and use case, after the reference runs'
accuracies. Besides the datasets of the config that ran, it covers every other dataset whose results lie in the same
``results/`` folder (:func:`present_results`: a run of another config there, such as the digits default beside
MNIST), so that one config's run does not drop another's section. It holds no timestamps or timings, so the same
results give the same bytes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import paths
from ..io import atomic_path, load_json
from ..plan import SECTIONS
from .common import log, tracking_run

__all__ = ["summary_stage", "reference_runs_table", "present_results"]

#: The files a dataset's summary section needs, under ``results/<dataset>/``: without them a folder is not a
#: dataset's finished results.
_REQUIRED = ("info", "claims", "claims_summary")


def _mean_std(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float) * 100
    if not len(v):
        return "n/a"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def reference_runs_table(summaries: Sequence[Mapping], reference: Mapping | None) -> str:
    """Markdown table of the reference runs: accuracies (%) at the selected and last epochs, mean ± std."""
    keys = [
        ("val_acc_selected", "validation, selected epoch"),
        ("test_acc_selected", "test, selected epoch"),
        ("test_acc_last", "test, last epoch"),
        ("test_acc_max", "test, max over epochs (official metric)"),
    ]
    rows = ["| accuracy (%) | mean ± std over seeds | per seed |", "|---|---|---|"]
    for key, label in keys:
        vals = [s.get(key) for s in summaries]
        per_seed = ", ".join(f"{int(s['seed'])}: {100 * s[key]:.2f}" for s in summaries if s.get(key) is not None)
        rows.append(f"| {label} | {_mean_std(vals)} | {per_seed} |")
    text = "\n".join(rows)
    if reference:
        text += (
            f"\n\nReference checkpoint of use cases 1-2: seed {reference['seed']}, epoch {reference['epoch']} "
            f"({reference['checkpoint']}, selected on {reference.get('select')}); use case 3 selects each retraining "
            "seed's subsets from its own run's checkpoint."
        )
    return text


def _demote(markdown: str, levels: int = 3) -> str:
    """Push a table file's own headings down so they nest under the page's section headings (level 3)."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def present_results(root: str | os.PathLike, skip: Sequence[str] = ()) -> dict[str, dict[str, str | list[str]]]:
    """The summary's files of every dataset whose finished results lie under ``root`` (its prepared data's info, its
    claims and at least one training run), but for those in ``skip``: {dataset: {"info", "summaries", "reference",
    "claims", "claims_summary", <the section keys whose table exists>}}, datasets in name order."""
    root = Path(root)
    found: dict[str, dict[str, str | list[str]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        ds = folder.name
        if ds in skip:
            continue
        files: dict[str, str | list[str]] = {
            "info": paths.data_file("info.json", ds, str(root)),
            "reference": paths.reference_file("reference.json", ds, str(root)),
            "claims": paths.claims_file("claims.md", ds, str(root)),
            "claims_summary": paths.claims_file("summary.json", ds, str(root)),
        }
        runs = sorted(glob.glob(paths.train_file("summary.json", ds, "*", str(root))))
        if not runs or not all(Path(files[k]).is_file() for k in _REQUIRED):
            continue
        files["summaries"] = runs
        if not Path(files["reference"]).is_file():
            del files["reference"]
        for section in SECTIONS:
            table = paths.dataset_file(section.file, ds, str(root))
            if Path(table).is_file():
                files[section.key] = table
        found[ds] = files
    return found


def summary_stage(
    *,
    results: Mapping[str, Mapping[str, str | Sequence[str]]],
    output: str | os.PathLike,
    mlflow_cfg: Mapping | None = None,
    others: bool = False,
) -> str:
    """Write the summary page from ``results[dataset]`` = {"info", "summaries", "reference", "claims",
    "claims_summary", <section keys>}: the claims of every dataset first, then every stage table.

    ``others``: cover too every other dataset with finished results in the page's folder (``results/``:
    :func:`present_results`), after the config's, marked as found there (its files as they are on disk, from an
    earlier run). The page is attached to one MLflow run (rule ``summary``) in each of the config's datasets'
    experiments."""
    root = Path(output).parent
    found = present_results(root, skip=list(results)) if others else {}
    everything = {**results, **found}
    lines = [
        "# lpntk results",
        "",
        f"Regenerated by `snakemake`; every number traces back to a file under `{paths.dataset_dir('<dataset>')}/` "
        "and a run in MLflow. The authors' numbers are those of their slides (`docs/paper/paper-protocols.md` "
        "§5.0), printed beside ours where the dataset is one they report.",
        "",
        "## The paper's claims",
        "",
        "The design is declared before the run (`docs/statistics.md`, and each dataset's `claims` block): per claim "
        "and dataset one **primary** comparison decides the verdict; the claim's other comparisons form its "
        "**secondary** family, judged on Holm-adjusted p-values; **exploratory** rows are shown and never counted. "
        "Effects are oriented so that a positive value is what the paper claims, with 95 % intervals (90 % for "
        "non-inferiority, whose p is one-sided against the declared margin) over the claim's unit (retraining seeds, "
        "targets, classes; the test set is fixed, so intervals are over seeds, not over test sets). *supported* / "
        "*contradicted*: the test rejects at 5 % on the claimed / the opposite side; *inconclusive*: it does not; "
        "*provisional*: fewer units than the declared minimum, or a test that cannot reach 5 % at this n -- the "
        "effect is shown, no verdict is drawn; *not measured*: an arm the config asks for could not be built; "
        "*not run*: the claim's stage is off. The trivial baseline of each metric is printed beside it.",
        "",
    ]
    for ds, files in everything.items():
        if files.get("claims"):
            verdicts = load_json(files["claims_summary"], what="claims summary")["verdicts"]
            counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(verdicts.items()))
            lines += [
                f"### {ds} (primary verdicts: {counts or 'none'})",
                "",
                *([_found_note(ds, root), ""] if ds in found else []),
                _demote(Path(files["claims"]).read_text().strip(), 4),
                "",
            ]
    for ds, files in everything.items():
        info = load_json(files["info"], what="prepared-data info")
        summaries = sorted(
            (load_json(p, what="training summary") for p in files["summaries"]), key=lambda s: int(s["seed"])
        )
        reference = load_json(files["reference"], what="reference info") if files.get("reference") else None
        n = info["n"]
        lines += [
            f"## {ds}",
            "",
            f"{n['train']:,} training / {n['val']:,} validation / {n['test']:,} test images, "
            f"{info['num_classes']} classes, input {'x'.join(map(str, info['input_shape']))}; "
            f"model with {summaries[0].get('n_params', 0):,} parameters; seeds "
            f"{', '.join(str(int(s['seed'])) for s in summaries)}.",
            "",
            *([_found_note(ds, root), ""] if ds in found else []),
            "### Reference training runs",
            "",
            reference_runs_table(summaries, reference),
            "",
        ]
        for section in SECTIONS:
            if section.key in files:
                table = Path(files[section.key]).read_text().strip()
                lines += [f"### {section.heading}", "", section.text, "", _demote(table), ""]
    text = "\n".join(lines).rstrip() + "\n"
    with atomic_path(output) as tmp:
        Path(tmp).write_text(text)
    for ds in results:
        with tracking_run("summary", ds, {}, mlflow_cfg, live=False) as run:
            run.log_outputs({"summary": str(output)})
    log.info(
        "summary of %d dataset(s) written to %s (%d of the config, %s found under %s)",
        len(everything),
        output,
        len(results),
        ", ".join(found) or "none",
        root,
    )
    return text


def _found_note(ds: str, root) -> str:
    return (
        f"*{ds} is not in the config that wrote this page: its section shows the results found under `{root}/{ds}/`, "
        "as an earlier run of another config left them.*"
    )
