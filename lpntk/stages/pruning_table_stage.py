"""Stage pruning_table: the retraining runs aggregated over seeds, the slides' table beside ours, two figures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..figures.pruning_figures import plot_redundant_removal, plot_small_clusters
from ..io import atomic_path, load_json, save_table
from ..methods import method
from ..paper import pruning_reference
from ..plan import subset_plan
from .common import log, tracking_run

__all__ = ["METRICS", "runs_table", "aggregate_runs", "design_note", "pruning_table_stage"]

METRICS = ("test_acc_best_val", "test_acc_last", "test_acc_max")


def runs_table(results: Sequence[Mapping]) -> pd.DataFrame:
    """One row per retraining run (subset and seed): what the claims pair over seeds; accuracies in [0, 1]."""
    rows = []
    for rec in (r for res in results for r in res["subsets"]):
        spec = {k: rec.get(k) for k in ("method", "experiment", "keep", "data_fraction", "remove", "kernel")}
        for run in rec["runs"]:
            rows.append(
                {
                    "subset": rec["subset"],
                    **spec,
                    "seed": run["seed"],
                    "n_train": run.get("n_train"),
                    **{m: run[m] for m in (*METRICS, "val_acc_best", "best_epoch") if m in run},
                }
            )
    return pd.DataFrame(rows).sort_values(["subset", "seed"], kind="stable").reset_index(drop=True)


def aggregate_runs(results: Sequence[Mapping], n_full: int | None = None) -> pd.DataFrame:
    """One row per subset of the retraining results: mean and sample std (ddof=1) over seeds of each metric, in %."""
    by_subset: dict[str, dict] = {}
    for rec in (r for res in results for r in res["subsets"]):
        entry = by_subset.setdefault(rec["subset"], {**{k: v for k, v in rec.items() if k != "runs"}, "runs": []})
        entry["runs"].extend(rec["runs"])
    rows = []
    for name, rec in by_subset.items():
        seeds = sorted(r["seed"] for r in rec["runs"])
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"subset {name}: seeds repeat across shards: {seeds}")
        sizes = [r["n_train"] for r in rec["runs"] if r.get("n_train") is not None] or [rec["n_train"]]
        row = {
            "subset": name,
            "method": rec["method"],
            "experiment": rec["experiment"],
            "keep": rec.get("keep"),
            "data_fraction": rec.get("data_fraction"),
            "remove": rec.get("remove"),
            "kernel": rec.get("kernel"),
            "draw": "per_seed" if rec.get("per_seed") else "shared",
            "n_train": float(np.mean(sizes)),
            "n_train_min": int(min(sizes)),
            "n_train_max": int(max(sizes)),
            "n_seeds": len(seeds),
            "epochs": rec.get("epochs"),
        }
        if n_full:
            row["realised_keep"] = row["n_train"] / n_full
        for m in METRICS:
            vals = 100.0 * np.asarray([r[m] for r in rec["runs"]], dtype=np.float64)
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _size(lo: int, hi: int) -> str:
    """A training-set size over seeds: the size when every seed's subset has it, else its range ``min-max``."""
    return f"{int(lo)}" if int(lo) == int(hi) else f"{int(lo)}-{int(hi)}"


def design_note(cfg: Mapping) -> str:
    """The pruning table's sentence on how the subsets are selected (``pruning.draws``)."""
    random = (
        "random drawn per seed"
        if cfg["pruning"]["draws"] == "per_seed"
        else "random drawn once for every seed (pruning.draws: shared)"
    )
    return (
        "Each retraining seed's subset is selected from its own reference seed: lpNTK from that seed's kernel, "
        f"EL2N/GraNd/forgetting from that seed's training dynamics, {random}; the spread over seeds therefore "
        "includes the selection's variance."
    )


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or not np.isfinite(mean):
        return ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _wide(df: pd.DataFrame, metric: str, slides: Mapping | None, methods: Sequence[str]) -> pd.DataFrame:
    table = df[df["experiment"] == "table"]
    keep_rows = table[table["keep"].notna()]
    keeps = sorted({float(k) for k in keep_rows["keep"]}, reverse=True)
    rows = []
    for m in methods:
        row = {"method": m}
        if slides is not None:
            row["slides (keep not stated)"] = _pm(*slides[m]) if m in slides else ""
        for k in keeps:
            hit = keep_rows[(keep_rows["method"] == m) & np.isclose(keep_rows["keep"].astype(float), k)]
            row[f"keep {k:g}"] = _pm(hit[f"{metric}_mean"].iloc[0], hit[f"{metric}_std"].iloc[0]) if len(hit) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def pruning_table_stage(
    *,
    dataset: str,
    cfg: Mapping,
    runs: Sequence[str | os.PathLike],
    subsets_table: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Aggregate the retraining runs (``runs``: the retrain jobs' results; ``subsets_table``: the prune stage's
    tables of every retraining seed and prune group; the full set's size is its retraining's): ``outputs["csv"]``
    (long: one row per subset, plus the slides' rows), ``outputs["runs"]`` (one row per retraining run: what the
    claims pair over seeds), ``outputs["md"]`` (wide tables with the slides beside ours), the figures
    ``outputs["fig_redundant"]`` / ``outputs["fig_small"]`` (PNG) and ``outputs["fig_redundant_pdf"]`` /
    ``outputs["fig_small_pdf"]``."""
    tables = [subsets_table] if isinstance(subsets_table, str | os.PathLike) else list(subsets_table)
    sizes = pd.concat([pd.read_csv(p) for p in tables], ignore_index=True)
    records = [load_json(p, what="retraining result") for p in runs]
    full = [s["n_train"] for r in records for s in r["subsets"] if s["subset"] == "full"]
    n_full = int(full[0]) if full else int(sizes.loc[sizes["name"] == "full", "n"].iloc[0])
    df = aggregate_runs(records, n_full)
    order = {p["name"]: i for i, p in enumerate(subset_plan(cfg))}
    df = df.sort_values("subset", key=lambda s: s.map(order)).reset_index(drop=True)
    small = df["experiment"] == "small_clusters"
    if small.any():  # realised keep of the small-cluster experiment relative to its class-balanced subset
        ref = sizes.groupby("name")["reference_n"].mean()  # the base subsets' sizes, over the seeds' draws
        df.loc[small, "realised_keep"] = df.loc[small, "n_train"] / df.loc[small, "subset"].map(ref).to_numpy()
    df.insert(0, "source", "ours")
    df.insert(1, "dataset", dataset)
    slides = pruning_reference(cfg)
    long = df
    if slides is not None:
        srows = pd.DataFrame(
            [
                {
                    "source": "slides",
                    "dataset": dataset,
                    "subset": "",
                    "method": m,
                    "experiment": "table",
                    "reported_acc_mean": v[0],
                    "reported_acc_std": v[1],
                }
                for m, v in slides.items()
            ]
        )
        long = pd.concat([df, srows], ignore_index=True)
    methods = ["full", *[m for m in cfg["pruning"]["methods"] if method(m).keep]]  # one column per kept fraction
    n_seeds = int(df["n_seeds"].max())
    table_epochs = sorted({int(e) for e in df.loc[~small, "epochs"]})
    lines = [
        f"# Pruning the training set of {dataset}: test accuracy (%) of models retrained from scratch",
        "",
        f"Mean ± sample std (ddof=1) over {n_seeds} seeds, {'/'.join(map(str, table_epochs))} epochs per "
        "run. "
        + design_note(cfg)
        + " The authors' slides give one number per method for MNIST and CIFAR-10 without stating the kept "
        "fraction (and, as the official code, probably the maximum test accuracy over epochs)."
        + ("" if slides else f" The slides have no numbers for this dataset ({cfg.get('name')})."),
        "",
    ]
    for metric, title in (
        ("test_acc_best_val", "test accuracy at the best-validation epoch (main)"),
        (
            "test_acc_max",
            "maximum test accuracy over epochs (the official code's metric; selects on the test set, optimistic)",
        ),
        ("test_acc_last", "test accuracy at the last epoch"),
    ):
        lines += [f"## {title}", "", _wide(df, metric, slides, methods).to_markdown(index=False), ""]
    other = df[(df["experiment"] == "table") & df["keep"].isna()]
    if len(other):
        lines += [
            "## other variants (kept fraction is an outcome)",
            "",
            other.assign(
                n_train=[_size(a, b) for a, b in zip(other["n_train_min"], other["n_train_max"], strict=True)],
                realised=other["realised_keep"].map(lambda v: f"{v:.3f}"),
                acc=[
                    _pm(a, b)
                    for a, b in zip(other["test_acc_best_val_mean"], other["test_acc_best_val_std"], strict=True)
                ],
            )[["subset", "method", "n_train", "realised", "acc"]].to_markdown(index=False),
            "",
        ]
    if small.any():
        s = df[small]
        lines += [
            f"## small-cluster removal on class-balanced subsets (test accuracy at best validation; "
            f"{'/'.join(str(int(e)) for e in sorted(set(s['epochs'])))} epochs per run)",
            "",
            s.assign(
                n_train=[_size(a, b) for a, b in zip(s["n_train_min"], s["n_train_max"], strict=True)],
                realised=s["realised_keep"].map(lambda v: f"{v:.3f}"),
                acc=[_pm(a, b) for a, b in zip(s["test_acc_best_val_mean"], s["test_acc_best_val_std"], strict=True)],
            )[["subset", "method", "data_fraction", "remove", "n_train", "realised", "acc"]].to_markdown(index=False),
            "",
        ]
    with tracking_run(
        "pruning_table", dataset, cfg, mlflow_cfg, run_name=f"pruning_table-{dataset}", live=False
    ) as run:
        save_table(outputs["csv"], long)
        save_table(outputs["runs"], runs_table(records))
        with atomic_path(outputs["md"]) as tmp:
            tmp.write_text("\n".join(lines))
        plot_redundant_removal(df, dataset, outputs["fig_redundant"], outputs["fig_redundant_pdf"])
        plot_small_clusters(df, dataset, outputs["fig_small"], outputs["fig_small_pdf"])
        metrics = {}
        for _, r in df[df["experiment"] == "table"].iterrows():
            # the table's means are in %; MLflow holds accuracies as fractions (lpntk.tracking's convention)
            metrics[f"{r['subset']}_test_acc_best_val"] = r["test_acc_best_val_mean"] / 100.0
            metrics[f"{r['subset']}_test_acc_max"] = r["test_acc_max_mean"] / 100.0
        run.log_metrics(metrics)
        run.log_outputs(dict(outputs))
    log.info("%s: pruning table of %d subsets", dataset, len(df))
    return long
