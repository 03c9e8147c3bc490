"""Stage relations: how training samples relate under lpNTK, within and across classes (paper-protocols §1.5, §1.6).

Within a class every pair i < j of the class's Gram (the kernel stage's output) is used. Across classes, a seeded
sample of ``cross_samples_per_class`` training samples per class (all of them where a class is smaller) is drawn,
the lpNTK Gram of that panel is computed with the engine at the reference checkpoint, and its cross-class blocks
give the cross-class pairs; their cosines use |phi|^2 from the per-class Grams. The panel's within-class blocks are
compared with the per-class Grams (they must agree to round-off: a check that kernels and checkpoint belong
together). Cross-class and all-pair shares are stratified estimates: each pair of classes (a, b) weighs n_a n_b
(exact when every class is sampled in full). Distribution quantiles of the cross-class pairs are those of the
sample (each pair of classes contributes m_a m_b pairs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data import load_prepared, normalize, to_unit
from ..figures.relations import plot_relation_histograms
from ..io import load_npz, save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..relations import (
    OFFICIAL_MNIST,
    RELATIONS,
    cosine,
    cross_redundant_mask,
    official_value_counts,
    redundant_mask,
    relation_counts,
    selfmax_larger_index_mask,
    stratified_shares,
    upper_triangle,
)
from ..train import select_device
from .common import load_reference_model, log, set_threads, tracking_run

__all__ = ["relations_stage", "load_class_grams", "sample_panel", "RELATIONS_OUTPUTS"]

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


def load_class_grams(kernel_files: Sequence[str | os.PathLike]) -> list[dict[str, np.ndarray]]:
    """The per-class kernel files, checked (square symmetric Gram, one class each, classes 0..C-1 in order)."""
    grams = []
    for c, path in enumerate(kernel_files):
        k = load_npz(path, what="per-class lpNTK Gram")
        missing = {"gram", "index", "position", "label", "sq_norm"} - set(k)
        if missing:
            raise ValueError(f"kernel file {path} lacks {sorted(missing)}; rerun the kernel step")
        if int(k["label"]) != c:
            raise ValueError(f"kernel file {path} holds class {int(k['label'])}, expected class {c}")
        n = len(k["index"])
        if k["gram"].shape != (n, n):
            raise ValueError(f"kernel file {path}: Gram of shape {k['gram'].shape} for {n} samples")
        grams.append(k)
    return grams


def sample_panel(class_sizes: Sequence[int], per_class: int, seed: int) -> list[np.ndarray]:
    """Seeded choice of ``min(per_class, n_c)`` within-class positions per class (sorted), in class order."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size=min(per_class, n), replace=False)) for n in class_sizes]


def _distribution(values: np.ndarray, quantiles: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Mean, standard deviation and quantiles of ``scale * values`` (accumulated in float64)."""
    if not values.size:
        return {"mean": float("nan"), "std": float("nan"), **{f"q{q:g}": float("nan") for q in quantiles}}
    out = {
        "mean": scale * float(values.mean(dtype=np.float64)),
        "std": abs(scale) * float(values.std(dtype=np.float64)),
    }
    qs = np.quantile(values, quantiles)
    out.update({f"q{q:g}": scale * float(v) for q, v in zip(quantiles, qs, strict=True)})
    return out


def _cross_panel(cfg, prep, grams, model_path, device, positions) -> tuple[np.ndarray, np.ndarray]:
    """lpNTK Gram of the sampled panel (concatenated classes) at the reference checkpoint, float64."""
    kcfg = cfg["kernel"]
    model = load_reference_model(cfg, prep.info, model_path, device)
    train_pos = np.concatenate([g["position"][p] for g, p in zip(grams, positions, strict=True)])
    x = normalize(to_unit(prep.train.x[train_pos]), prep.info.mean, prep.info.std)
    y = prep.train.y[train_pos]
    dtype = {"float32": torch.float32, "float64": torch.float64}[kcfg["dtype"]]
    gram = lpntk_gram(
        model,
        x.to(device),
        y.to(device),
        prep.info.num_classes,
        mode=kcfg["mode"],
        sketch_dim=kcfg.get("sketch_dim"),
        seed=int(kcfg.get("sketch_seed", 0)),
        block_size=int(kcfg["block_size"]),
        max_memory_bytes=int(kcfg["max_memory_gb"] * 2**30),
        dtype=dtype,
    )
    return gram.detach().cpu().to(torch.float64).numpy(), train_pos


def relations_stage(
    dataset: str,
    cfg: Mapping,
    kernel_files: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    reference: str | os.PathLike,
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Relation shares, lpNTK distributions and redundant shares of one dataset; see the module docstring.

    ``outputs`` maps every name of :data:`RELATIONS_OUTPUTS` to a path. Returns the summary (also written as JSON).
    """
    rcfg = cfg["relations"]
    tau, thr = float(rcfg["tau"]), float(rcfg["official_threshold"])
    quantiles = [float(q) for q in rcfg["quantiles"]]
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"relations.tau must lie in [0, 1), got {tau}")
    if any(not 0.0 <= q <= 1.0 for q in quantiles):
        raise ValueError(f"relations.quantiles must lie in [0, 1], got {quantiles}")
    missing = set(RELATIONS_OUTPUTS) - set(outputs)
    if missing:
        raise ValueError(f"relations_stage: outputs lack {sorted(missing)}")
    set_threads(threads)
    t0 = time.perf_counter()
    grams = load_class_grams(kernel_files)
    prep = load_prepared(data_dir)
    num_classes = prep.info.num_classes
    if len(grams) != num_classes:
        raise ValueError(f"{len(grams)} kernel files for {num_classes} classes")
    sizes = [len(g["index"]) for g in grams]
    taus = sorted({0.0, tau})

    # ---- the cross-class panel's Gram with the engine (first: its memory is freed before the pooled arrays) --
    m = int(rcfg["cross_samples_per_class"])
    device = select_device(cfg.get("device", "auto"))
    panel_pos = [np.zeros(0, dtype=np.int64) for _ in grams]
    panel = np.zeros((0, 0))
    train_pos = np.zeros(0, dtype=np.int64)
    if m > 0 and num_classes > 1:
        panel_pos = sample_panel(sizes, m, int(rcfg["seed"]))
        panel, train_pos = _cross_panel(cfg, prep, grams, reference, device, panel_pos)

    # ---- within classes: every pair i < j of every class ---------------------------------------------------
    n_pairs_class = [s * (s - 1) // 2 for s in sizes]
    within_k_all = np.empty(sum(n_pairs_class), dtype=np.float32)  # pooled values, filled class by class
    within_c_all = np.empty(sum(n_pairs_class), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(n_pairs_class)])
    per_class = []
    within_counts = {t: [] for t in taus}
    within_official = []
    for c, g in enumerate(grams):
        gram = g["gram"].astype(np.float64)
        sq = g["sq_norm"].astype(np.float64)
        kv = upper_triangle(gram)
        cv = upper_triangle(cosine(gram, sq))
        within_k_all[offsets[c] : offsets[c + 1]] = kv
        within_c_all[offsets[c] : offsets[c + 1]] = cv
        for t in taus:
            within_counts[t].append(relation_counts(cv, t))
        within_official.append(official_value_counts(num_classes * kv, thr))
        red = redundant_mask(gram)
        selfmax = selfmax_larger_index_mask(gram, np.argsort(g["index"], kind="stable"))
        row = {
            "class": c,
            "n": sizes[c],
            "pairs": kv.size,
            "share_redundant": float(red.mean()) if red.size else np.nan,
            "share_selfmax_larger_index": float(selfmax.mean()) if selfmax.size else np.nan,
            "cos_median": float(np.median(cv)) if cv.size else np.nan,
        }
        n_pairs = max(kv.size, 1)
        row.update({f"share_{k}": v / n_pairs if kv.size else np.nan for k, v in within_counts[tau][-1].items()})
        per_class.append(row)

    # ---- across classes: the panel's cross-class blocks --------------------------------------------------------
    cross_k, cross_c = np.zeros(0), np.zeros(0)
    cross_counts = {t: [] for t in taus}
    cross_official, cross_pop, check_err = [], [], float("nan")
    cross_red = [np.zeros(0, dtype=bool) for _ in grams]
    if m > 0 and num_classes > 1:
        bounds = np.cumsum([0] + [len(p) for p in panel_pos])
        sl = [slice(bounds[c], bounds[c + 1]) for c in range(num_classes)]
        errs = []
        for c, g in enumerate(grams):  # the panel's within-class blocks must reproduce the per-class Grams
            ref = g["gram"][np.ix_(panel_pos[c], panel_pos[c])].astype(np.float64)
            errs.append(np.abs(panel[sl[c], sl[c]] - ref).max() / max(np.abs(ref).max(), 1e-30))
        check_err = float(max(errs))
        if cfg["kernel"]["mode"] == "exact" and check_err > 1e-3:
            raise ValueError(
                f"the lpNTK of the reference checkpoint {reference} differs from the per-class Grams "
                f"(relative error {check_err:.2e}); the kernel files are stale: delete "
                f"results/{dataset}/kernel and rerun"
            )
        ks, cs = [], []
        for a in range(num_classes):
            sq_a = grams[a]["sq_norm"].astype(np.float64)[panel_pos[a]]
            others = [b for b in range(num_classes) if b != a]
            block_all = panel[sl[a], :][:, np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in others])]
            cross_red[a] = cross_redundant_mask(block_all, sq_a)
            for b in range(a + 1, num_classes):
                sq_b = grams[b]["sq_norm"].astype(np.float64)[panel_pos[b]]
                block = panel[sl[a], sl[b]]
                cos_ab = cosine(block, sq_a, sq_b).ravel()
                ks.append(block.ravel())
                cs.append(cos_ab)
                for t in taus:
                    cross_counts[t].append(relation_counts(cos_ab, t))
                cross_official.append(official_value_counts(num_classes * block.ravel(), thr))
                cross_pop.append(float(sizes[a]) * sizes[b])
        cross_k, cross_c = np.concatenate(ks), np.concatenate(cs)
    for c, row in enumerate(per_class):
        row["n_panel"] = len(panel_pos[c])
        row["share_redundant_cross_sampled"] = float(cross_red[c].mean()) if cross_red[c].size else np.nan

    # ---- shares: within (exact), across (stratified estimate), all pairs ---------------------------------------
    within_pop = [s * (s - 1) / 2 for s in sizes]
    n_within, n_cross_pop = (
        float(sum(within_pop)),
        float(sum(sizes[a] * sizes[b] for a in range(num_classes) for b in range(a + 1, num_classes))),
    )
    rows = []

    def add(scope, rule, pairs, evaluated, shares):
        rows.append({"scope": scope, "rule": rule, "pairs": pairs, "pairs_evaluated": evaluated, **shares})

    rules = [(f"cos, tau={t:g}", within_counts[t], cross_counts[t]) for t in taus]
    rules.append(
        (
            f"official: K*kappa vs +-{thr:g}",
            [{_OFFICIAL_KEYS[k]: v for k, v in c.items()} for c in within_official],
            [{_OFFICIAL_KEYS[k]: v for k, v in c.items()} for c in cross_official],
        )
    )
    shares: dict[tuple[str, str], dict[str, float]] = {}
    for rule, wc, cc in rules:
        shares["within", rule] = stratified_shares(wc, within_pop)
        add("within", rule, int(n_within), int(n_within), shares["within", rule])
        if cc:
            shares["cross", rule] = stratified_shares(cc, cross_pop)
            shares["all", rule] = stratified_shares(wc + cc, within_pop + cross_pop)
            add("cross", rule, int(n_cross_pop), int(cross_k.size), shares["cross", rule])
            add("all", rule, int(n_within + n_cross_pop), int(n_within + cross_k.size), shares["all", rule])
    add(
        "official code, MNIST (pairs i <= j)",
        f"official: K*kappa vs +-{0.1:g}",
        1_800_030_000,
        1_800_030_000,
        {
            "interchangeable": OFFICIAL_MNIST["positive"],
            "unrelated": OFFICIAL_MNIST["zero"],
            "contradictory": OFFICIAL_MNIST["negative"],
        },
    )
    shares_df = pd.DataFrame(rows)

    # ---- distributions ------------------------------------------------------------------------------------------
    dist_rows = []
    for scope, kv, cv in (("within", within_k_all, within_c_all), ("cross (sampled)", cross_k, cross_c)):
        if scope.startswith("cross") and not kv.size:
            continue
        for quantity, values, scale in (
            ("kappa", kv, 1.0),
            ("K*kappa (official scale)", kv, float(num_classes)),
            ("cos", cv, 1.0),
        ):
            dist_rows.append(
                {"scope": scope, "quantity": quantity, "pairs": values.size, **_distribution(values, quantiles, scale)}
            )
    dist_df = pd.DataFrame(dist_rows)

    # ---- per class (redundant samples) --------------------------------------------------------------------------
    n_total = sum(sizes)
    red_all = sum(r["share_redundant"] * r["n"] for r in per_class if r["n"]) / n_total
    selfmax_all = sum(r["share_selfmax_larger_index"] * r["n"] for r in per_class if r["n"]) / n_total
    n_panel = sum(len(p) for p in panel_pos)
    red_cross_all = (sum(int(r.sum()) for r in cross_red) / n_panel) if n_panel else np.nan
    all_row = {
        "class": "all",
        "n": n_total,
        "pairs": int(n_within),
        "share_redundant": red_all,
        "share_selfmax_larger_index": selfmax_all,
        "cos_median": float(np.median(within_c_all)) if within_c_all.size else np.nan,
        **{f"share_{k}": v for k, v in shares["within", f"cos, tau={tau:g}"].items()},
        "n_panel": n_panel,
        "share_redundant_cross_sampled": red_cross_all,
    }
    per_class_df = pd.DataFrame(per_class + [all_row])
    cols = [
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
    per_class_df = per_class_df[cols]

    # ---- summary and metrics ------------------------------------------------------------------------------------
    main = f"cos, tau={tau:g}"
    official_rule = f"official: K*kappa vs +-{thr:g}"
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
    metrics.update(
        {
            "share_redundant": red_all,
            "share_redundant_cross": red_cross_all,
            "share_selfmax_larger_index": selfmax_all,
            "cross_check_rel_err": check_err,
            "pairs_within": n_within,
            "pairs_cross_sampled": float(cross_k.size),
        }
    )
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
        "official_mnist": OFFICIAL_MNIST,
    }

    with tracking_run(
        "relations",
        dataset,
        cfg,
        mlflow_cfg,
        tags={"tau": tau, "cross_samples_per_class": m},
        run_name=f"relations-{dataset}",
    ) as run:
        save_table(outputs["shares"], shares_df)
        save_table(outputs["shares_md"], _percent(shares_df, list(RELATIONS)))
        save_table(outputs["distribution"], dist_df)
        save_table(outputs["distribution_md"], dist_df.round(4))
        save_table(outputs["per_class"], per_class_df)
        save_table(outputs["per_class_md"], _percent(per_class_df, [c for c in cols if c.startswith("share_")]))
        save_npz(
            outputs["cross"],
            gram=panel.astype(np.float32),
            position=train_pos,
            index=prep.train.index[train_pos].numpy() if train_pos.size else train_pos,
            label=prep.train.y[train_pos].numpy() if train_pos.size else train_pos,
            sq_norm=np.concatenate([g["sq_norm"][p] for g, p in zip(grams, panel_pos, strict=True)]),
            seed=np.int64(rcfg["seed"]),
        )
        plot_relation_histograms(
            within_k_all,
            cross_k,
            within_c_all,
            cross_c,
            tau,
            dataset,
            outputs["histogram"],
            outputs["histogram_pdf"],
            bins=int(rcfg["bins"]),
        )
        save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "cross"})
    log.info(
        "%s: within-class pairs %d: interchangeable %.4f, unrelated %.4f, contradictory %.4f (tau %g); "
        "redundant %.4f; self-max (larger index) %.4f",
        dataset,
        int(n_within),
        metrics["share_interchangeable"],
        metrics["share_unrelated"],
        metrics["share_contradictory"],
        tau,
        red_all,
        selfmax_all,
    )
    return summary


def _percent(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy for Markdown: share columns as percentages (3 decimals), headed with a % sign."""
    out = df.copy()
    for c in columns:
        out[c] = (100.0 * out[c].astype(float)).round(3)
    return out.rename(columns={c: f"{c} %" for c in columns})
