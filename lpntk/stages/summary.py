"""Stage summary: ``results/summary.md``, every dataset's tables in one page, the authors' numbers beside ours.

The stage tables already carry the slides' numbers where the dataset is one the slides report (MNIST,
CIFAR-10); this page gathers them under one heading per dataset and use case, after the reference runs'
accuracies. It holds no timestamps or timings, so the same results give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io import atomic_path, load_json
from .common import log, tracking_run

__all__ = ["SECTIONS", "Section", "enabled_sections", "summary_stage", "reference_runs_table"]


class Section(NamedTuple):
    """One stage table of the summary page (the workflow's summary rule reads the same entries for its inputs)."""

    key: str  #: key of the table's file in a dataset's input mapping
    flag: tuple[str, ...]  #: path in the dataset block of the block whose ``enabled`` turns the table on
    file: str  #: the table's file under ``results/<dataset>/``
    heading: str
    text: str  #: what the table shows


#: The stage tables in page order.
SECTIONS: tuple[Section, ...] = (
    Section(
        "relations_shares",
        ("relations",),
        "relations/shares.md",
        "Use case 1 - relations between samples under lpNTK",
        "Shares of interchangeable / unrelated / contradictory pairs (cosine rule at tau = 0 and the configured "
        "tau, and the official code's raw-value rule beside its MNIST numbers).",
    ),
    Section(
        "relations_per_class",
        ("relations",),
        "relations/per_class.md",
        "Use case 1 - redundant samples per class",
        "Redundant: some other sample x' of the class has kappa(x, x') > kappa(x, x) (the slides' definition); "
        "share_selfmax_larger_index is the official code's self-max test (against later samples only) applied "
        "within each class; the official code tested against later samples of every class and found 46.9 % "
        "self-max samples on MNIST, so the within-class rate runs higher and is not directly comparable.",
    ),
    Section(
        "difficulty_auc",
        ("difficulty",),
        "difficulty/auc.md",
        "Use case 1 - controlling learning difficulty",
        "Area under the targets' L2-error curves when the training set adds the samples most interchangeable "
        "with them (easy), around the median, the least similar (hard), and with negative lpNTK "
        "(contradictory).",
    ),
    Section(
        "ld_size_correlation",
        ("difficulty", "size"),
        "ld_size/correlation.md",
        "Use case 1 - learning difficulty vs dataset size",
        "Correlation of per-sample learning difficulty between nested training sets of different sizes.",
    ),
    Section(
        "forgetting_table",
        ("forgetting",),
        "forgetting/table.md",
        "Use case 2 - predicting forgetting events",
        "First-order prediction of forgetting events with eNTK blocks, lpNTK and pNTK; the slides' numbers "
        "beside the stepwise rows (the official code's per-step averaging).",
    ),
    Section(
        "pruning_table",
        ("pruning",),
        "pruning/table.md",
        "Use case 3 - pruning the training set",
        "Test accuracy after retraining on the kept subsets; the slides' numbers beside ours.",
    ),
)


def enabled_sections(block: Mapping) -> list[Section]:
    """The sections whose stage a dataset's config ``block`` enables, in page order."""
    out = []
    for section in SECTIONS:
        node = block
        for part in section.flag:
            node = node[part]
        if node["enabled"]:
            out.append(section)
    return out


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
            f"\n\nReference checkpoint for the kernels: seed {reference['seed']}, epoch {reference['epoch']} "
            f"({reference['checkpoint']}, selected on {reference.get('select')})."
        )
    return text


def _demote(markdown: str, levels: int = 3) -> str:
    """Push a table file's own headings down so they nest under the page's section headings (level 3)."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def summary_stage(
    results: Mapping[str, Mapping[str, str | Sequence[str]]],
    output: str | os.PathLike,
    mlflow_cfg: Mapping | None = None,
) -> str:
    """Write the summary page from ``results[dataset]`` = {"info", "summaries", "reference", <section keys>}.

    The page is attached to one MLflow run (rule ``summary``) in each dataset's experiment."""
    lines = [
        "# lpntk results",
        "",
        "Regenerated by `snakemake`; every number traces back to a file under `results/<dataset>/` and a run "
        "in MLflow. The authors' numbers are those of their slides (`docs/reference/paper-protocols.md` "
        "§5.0), printed beside ours where the dataset is one they report.",
        "",
    ]
    for ds, files in results.items():
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
        with tracking_run("summary", ds, {}, mlflow_cfg) as run:
            run.log_outputs({"summary": str(output)})
    log.info("summary of %d dataset(s) written to %s", len(results), output)
    return text
