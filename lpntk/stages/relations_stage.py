"""Stage relations: how training samples relate under lpNTK, within and across classes (paper-protocols §1.5, §1.6).

Within a class every pair i < j of the class's Gram (the kernel stage's output) is used. Across classes, a seeded
sample of ``cross_samples_per_class`` training samples per class (all of them where a class is smaller) is drawn,
the lpNTK Gram of that panel is computed with the engine at the reference checkpoint, and its cross-class blocks
give the cross-class pairs; their cosines use |phi|^2 from the per-class Grams. The panel's within-class blocks are
compared with the per-class Grams (they must agree to round-off: a check that kernels and checkpoint belong
together). Cross-class and all-pair shares are stratified estimates: each pair of classes (a, b) weighs n_a n_b
(exact when every class is sampled in full). Distribution quantiles of the cross-class pairs are those of the
sample (each pair of classes contributes m_a m_b pairs).

The stage computes in steps -- the pair statistics of :mod:`lpntk.relations` (``within_class_pairs``,
``cross_class_pairs`` on the panel of :func:`cross_class_panel`), then :func:`shares_table`,
:func:`distribution_table`, :func:`per_class_table`, :func:`relation_metrics` -- and writes in one
(:func:`write_relations`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import paths
from ..data import load_prepared, normalize, to_unit
from ..figures.relations_figures import plot_relation_histograms
from ..grams import load_class_grams
from ..io import save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..paper import OFFICIAL_MNIST_RELATIONS
from ..relations import (
    RELATIONS,
    CrossPairs,
    WithinPairs,
    cross_class_pairs,
    distribution,
    sample_panel,
    stratified_shares,
    within_class_pairs,
)
from ..train import select_device
from .common import check_outputs, log, tracking_run
from .kernel_stage import gram_options
from .torch_setup import load_reference_model, set_threads

__all__ = [
    "RELATIONS_OUTPUTS",
    "cross_class_panel",
    "shares_table",
    "distribution_table",
    "per_class_table",
    "relation_metrics",
    "write_relations",
    "relations_stage",
]

#: Output names of :func:`relations_stage` (the rule's ``output:`` keys).
RELATIONS_OUTPUTS = (
    "shares",
    "shares_md",
    "distribution",
    "distribution_md",
    "per_class",
    "per_class_md",
    "cross",
    "histogram",
    "histogram_pdf",
    "summary",
)

_OFFICIAL_KEYS = {"positive": "interchangeable", "zero": "unrelated", "negative": "contradictory"}
_PER_CLASS_COLUMNS = [
    "class",
    "n",
    "pairs",
    "share_redundant",
    "share_selfmax_larger_index",
    "n_panel",
    "share_redundant_cross_sampled",
    *[f"share_{k}" for k in RELATIONS],
    "cos_median",
]


# ---------------------------------------------------------------------------------------------- the engine


def cross_class_panel(cfg, prep, grams, reference, device, positions) -> tuple[np.ndarray, np.ndarray]:
    """lpNTK Gram of the sampled panel (concatenated classes) at the reference checkpoint (float64), and the
    panel's positions in the training split."""
    model = load_reference_model(cfg, prep.info, reference, device)
    train_pos = np.concatenate([g.position[p] for g, p in zip(grams, positions, strict=True)])
    x = normalize(to_unit(prep.train.x[train_pos]), prep.info.mean, prep.info.std)
    y = prep.train.y[train_pos]
    gram = lpntk_gram(model, x.to(device), y.to(device), prep.info.num_classes, **gram_options(cfg["kernel"]))
    return gram.detach().cpu().double().numpy(), train_pos


# ---------------------------------------------------------------------------------------------- tables


def _official_rule(thr: float) -> str:
    return f"official: K*kappa vs +-{thr:g}"


def shares_table(
    within: WithinPairs, cross: CrossPairs, sizes: Sequence[int], taus: Sequence[float], thr: float
) -> tuple[dict[tuple[str, str], dict[str, float]], pd.DataFrame]:
    """Shares of the three relations by scope (within classes: exact; across: stratified estimate; all pairs) and
    rule, and the official code's MNIST row."""
    within_pop = [s * (s - 1) / 2 for s in sizes]
    n_within = float(sum(within_pop))
    n_cross_pop = float(sum(sizes[a] * sizes[b] for a in range(len(sizes)) for b in range(a + 1, len(sizes))))
    rows = []

    def add(scope, rule, pairs, evaluated, shares):
        rows.append({"scope": scope, "rule": rule, "pairs": pairs, "pairs_evaluated": evaluated, **shares})

    def renamed(counts):
        return [{_OFFICIAL_KEYS[k]: v for k, v in c.items()} for c in counts]

    rules = [(f"cos, tau={t:g}", within.counts[t], cross.counts[t]) for t in taus]
    rules.append((_official_rule(thr), renamed(within.official), renamed(cross.official)))
    shares: dict[tuple[str, str], dict[str, float]] = {}
    for rule, wc, cc in rules:
        shares["within", rule] = stratified_shares(wc, within_pop)
        add("within", rule, int(n_within), int(n_within), shares["within", rule])
        if cc:
            shares["cross", rule] = stratified_shares(cc, cross.population)
            shares["all", rule] = stratified_shares(wc + cc, within_pop + cross.population)
            add("cross", rule, int(n_cross_pop), int(cross.kappa.size), shares["cross", rule])
            add("all", rule, int(n_within + n_cross_pop), int(n_within + cross.kappa.size), shares["all", rule])
    official = {_OFFICIAL_KEYS[k]: OFFICIAL_MNIST_RELATIONS[k] for k in _OFFICIAL_KEYS}
    add("official code, MNIST (pairs i <= j)", _official_rule(0.1), 1_800_030_000, 1_800_030_000, official)
    return shares, pd.DataFrame(rows)


def distribution_table(
    within: WithinPairs, cross: CrossPairs, quantiles: Sequence[float], num_classes: int
) -> pd.DataFrame:
    """Mean, std and quantiles of kappa, K*kappa (the official scale) and the cosine, within and across classes."""
    rows = []
    for scope, kv, cv in (("within", within.kappa, within.cos), ("cross (sampled)", cross.kappa, cross.cos)):
        if scope.startswith("cross") and not kv.size:
            continue
        for quantity, values, scale in (
            ("kappa", kv, 1.0),
            ("K*kappa (official scale)", kv, float(num_classes)),
            ("cos", cv, 1.0),
        ):
            rows.append(
                {"scope": scope, "quantity": quantity, "pairs": values.size, **distribution(values, quantiles, scale)}
            )
    return pd.DataFrame(rows)


def per_class_table(
    within: WithinPairs, cross: CrossPairs, shares, sizes: Sequence[int], panel_pos: Sequence[np.ndarray], tau: float
) -> pd.DataFrame:
    """Per class and over all classes: redundant and self-max shares, relation shares, median cosine."""
    per_class = [dict(r) for r in within.rows]
    for c, row in enumerate(per_class):
        row["n_panel"] = len(panel_pos[c])
        red = cross.redundant[c]
        row["share_redundant_cross_sampled"] = float(red.mean()) if red.size else np.nan
    n_total = sum(sizes)
    n_panel = sum(len(p) for p in panel_pos)
    all_row = {
        "class": "all",
        "n": n_total,
        "pairs": int(sum(s * (s - 1) // 2 for s in sizes)),
        "share_redundant": sum(r["share_redundant"] * r["n"] for r in per_class if r["n"]) / n_total,
        "share_selfmax_larger_index": sum(r["share_selfmax_larger_index"] * r["n"] for r in per_class if r["n"])
        / n_total,
        "cos_median": float(np.median(within.cos)) if within.cos.size else np.nan,
        **{f"share_{k}": v for k, v in shares["within", f"cos, tau={tau:g}"].items()},
        "n_panel": n_panel,
        "share_redundant_cross_sampled": (sum(int(r.sum()) for r in cross.redundant) / n_panel) if n_panel else np.nan,
    }
    return pd.DataFrame(per_class + [all_row])[_PER_CLASS_COLUMNS]


def relation_metrics(shares, per_class: pd.DataFrame, cross: CrossPairs, tau: float, thr: float) -> dict[str, float]:
    """The headline numbers (MLflow metrics and the summary): shares by scope and rule, redundant shares."""
    main, official_rule = f"cos, tau={tau:g}", _official_rule(thr)
    metrics: dict[str, float] = {f"share_{k}": v for k, v in shares["within", main].items()}
    metrics.update({f"share_{k}_tau0": v for k, v in shares["within", "cos, tau=0"].items()})
    for scope in ("cross", "all"):
        if (scope, main) in shares:
            metrics.update({f"share_{k}_{scope}": v for k, v in shares[scope, main].items()})
            metrics.update({f"share_{k}_tau0_{scope}": v for k, v in shares[scope, "cos, tau=0"].items()})
    for scope in ("within", "cross", "all"):
        if (scope, official_rule) in shares:
            metrics.update(
                {f"share_official_{o}_{scope}": shares[scope, official_rule][r] for o, r in _OFFICIAL_KEYS.items()}
            )
    total = per_class.iloc[-1]
    metrics.update(
        {
            "share_redundant": float(total["share_redundant"]),
            "share_redundant_cross": float(total["share_redundant_cross_sampled"]),
            "share_selfmax_larger_index": float(total["share_selfmax_larger_index"]),
            "cross_check_rel_err": cross.check_err,
            "pairs_within": float(total["pairs"]),
            "pairs_cross_sampled": float(cross.kappa.size),
        }
    )
    return metrics


def _percent(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy for Markdown: share columns as percentages (3 decimals), headed with a % sign."""
    out = df.copy()
    for c in columns:
        out[c] = (100.0 * out[c].astype(float)).round(3)
    return out.rename(columns={c: f"{c} %" for c in columns})


def write_relations(
    outputs: Mapping[str, str],
    *,
    shares: pd.DataFrame,
    distribution: pd.DataFrame,
    per_class: pd.DataFrame,
    within: WithinPairs,
    cross: CrossPairs,
    panel: Mapping[str, np.ndarray],
    summary: Mapping,
    tau: float,
    dataset: str,
    bins: int,
) -> None:
    """Every output of the relations stage (tables as CSV and Markdown, the panel, the histogram, the summary)."""
    save_table(outputs["shares"], shares)
    save_table(outputs["shares_md"], _percent(shares, list(RELATIONS)))
    save_table(outputs["distribution"], distribution)
    save_table(outputs["distribution_md"], distribution.round(4))
    save_table(outputs["per_class"], per_class)
    save_table(outputs["per_class_md"], _percent(per_class, [c for c in _PER_CLASS_COLUMNS if c.startswith("share_")]))
    save_npz(outputs["cross"], **panel)
    plot_relation_histograms(
        within.kappa,
        cross.kappa,
        within.cos,
        cross.cos,
        tau,
        dataset,
        outputs["histogram"],
        outputs["histogram_pdf"],
        bins=bins,
    )
    save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes


# ---------------------------------------------------------------------------------------------- the stage


def relations_stage(
    *,
    dataset: str,
    cfg: Mapping,
    kernels: Sequence[str | os.PathLike],
    data: Mapping[str, str | os.PathLike],
    reference: str | os.PathLike,
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Relation shares, lpNTK distributions and redundant shares of one dataset; see the module docstring.

    ``kernels``: the kernel files; ``data``: the prepared-data files; ``outputs`` maps every name of
    :data:`RELATIONS_OUTPUTS` to a path. Returns the summary (also written as JSON).
    """
    rcfg = cfg["relations"]
    tau, thr = float(rcfg["tau"]), float(rcfg["official_threshold"])
    quantiles = [float(q) for q in rcfg["quantiles"]]  # tau in [0, 1), quantiles in [0, 1]: the schema's ranges
    check_outputs(outputs, RELATIONS_OUTPUTS, "relations_stage")
    set_threads(threads)
    t0 = time.perf_counter()
    prep = load_prepared(data)
    num_classes = prep.info.num_classes
    grams = load_class_grams(kernels, num_classes)
    sizes = [len(g) for g in grams]
    taus = sorted({0.0, tau})

    # the cross-class panel's Gram with the engine first: its memory is freed before the pooled arrays exist
    m = int(rcfg["cross_samples_per_class"])
    panel_pos = [np.zeros(0, dtype=np.int64) for _ in grams]
    panel, train_pos = np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    if m > 0 and num_classes > 1:
        panel_pos = sample_panel(sizes, m, int(rcfg["seed"]))
        device = select_device(cfg.get("device", "auto"))
        panel, train_pos = cross_class_panel(cfg, prep, grams, reference, device, panel_pos)

    within = within_class_pairs(grams, taus, tau, thr)
    cross = cross_class_pairs(grams, panel, panel_pos, taus, thr)
    if cfg["kernel"]["mode"] == "exact" and cross.check_err > 1e-3:
        raise ValueError(
            f"the lpNTK of the reference checkpoint {reference} differs from the per-class Grams (relative error "
            f"{cross.check_err:.2e}); the kernel files are stale: delete {paths.kernel_dir(dataset)} and rerun"
        )
    shares, shares_df = shares_table(within, cross, sizes, taus, thr)
    dist_df = distribution_table(within, cross, quantiles, num_classes)
    per_class_df = per_class_table(within, cross, shares, sizes, panel_pos, tau)
    metrics = relation_metrics(shares, per_class_df, cross, tau, thr)
    summary = {
        "dataset": dataset,
        "tau": tau,
        "official_threshold": thr,
        "num_classes": num_classes,
        "class_sizes": sizes,
        "cross_samples_per_class": m,
        "cross_seed": int(rcfg["seed"]),
        "pairs": "distinct pairs i < j (self-pairs excluded)",
        "redundant": "within class: some other same-class sample x' has kappa(x, x') > kappa(x, x)",
        "metrics": metrics,
        "official_mnist": OFFICIAL_MNIST_RELATIONS,
    }
    panel_arrays = {
        "gram": panel.astype(np.float32),
        "position": train_pos,
        "index": prep.train.index[train_pos].numpy() if train_pos.size else train_pos,
        "label": prep.train.y[train_pos].numpy() if train_pos.size else train_pos,
        "sq_norm": np.concatenate([g.sq_norm[p] for g, p in zip(grams, panel_pos, strict=True)]),
        "seed": np.int64(rcfg["seed"]),
    }
    tags = {"tau": tau, "cross_samples_per_class": m}
    with tracking_run("relations", dataset, cfg, mlflow_cfg, tags=tags, run_name=f"relations-{dataset}") as run:
        write_relations(
            outputs,
            shares=shares_df,
            distribution=dist_df,
            per_class=per_class_df,
            within=within,
            cross=cross,
            panel=panel_arrays,
            summary=summary,
            tau=tau,
            dataset=dataset,
            bins=int(rcfg["bins"]),
        )
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "cross"})
    log.info(
        "%s: within-class pairs %d: interchangeable %.4f, unrelated %.4f, contradictory %.4f (tau %g); "
        "redundant %.4f; self-max (larger index) %.4f",
        dataset,
        int(metrics["pairs_within"]),
        metrics["share_interchangeable"],
        metrics["share_unrelated"],
        metrics["share_contradictory"],
        tau,
        metrics["share_redundant"],
        metrics["share_selfmax_larger_index"],
    )
    return summary
