"""Stages difficulty and ld_size: controlling a target's learning difficulty with the samples it is trained with
(paper-protocols §4.2), and learning difficulty vs dataset size (§4.1). Method: :mod:`lpntk.difficulty`.

difficulty: per class a target and its easy / median / hard (and, where they exist, contradictory) sets from the
per-class lpNTK Grams; ``runs`` independent trainings per set (run r seeded with ``seed_offset + r``, the same seeds
for every set, so runs are paired across sets); the targets' L2 error per epoch. The ``contradictory`` set draws
samples with kappa(t_c, j) < 0 from the target's class (``contradictory: class``; whenever every class has ``num``
of them this is the ``hard`` set itself, since hard = the ``num`` lowest) or from the whole training set
(``contradictory: all``, the default; kappa(t_c, j) for every training sample j is computed with the engine at the
reference checkpoint). In the latter case the added samples may carry other labels than the target: the set then
differs from the others in its label composition too (``label_purity`` in the table). The set is built only when every
class's target has at least ``num`` contradictory candidates; otherwise it is skipped and the summary says why.

ld_size: a seeded per-class pool of ``pool_per_class`` training samples, its quad-tree subsets, one training run per
subset (all runs from the same ``seed``: the same initialisation and shuffling stream, so runs differ only in their
data), LD per sample and size, Pearson (and Spearman) correlations between sizes. The training forward pass uses the
dataset's augmentation (as the official exp7.1); the difficulty runs use none (as the official exp7.2).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data import load_prepared, normalize, to_unit
from ..difficulty import (
    choose_target,
    contradictory_sets,
    curve_area,
    learning_difficulty,
    official_swap,
    pearson_matrix,
    quad_tree_subsets,
    select_sets,
    size_levels,
    target_l2_curves,
    target_similarity,
    training_set_positions,
)
from ..figures.difficulty import plot_difficulty_curves, plot_ld_correlation
from ..io import save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..train import Recipe, select_device
from .common import build_from_config, load_reference_model, log, set_threads, tracking_run
from .relations import load_class_grams

__all__ = ["difficulty_stage", "ld_size_stage", "difficulty_recipe", "DIFFICULTY_OUTPUTS", "LD_SIZE_OUTPUTS"]

DIFFICULTY_OUTPUTS = ("sets", "curves", "auc", "auc_md", "auc_per_class", "figure", "figure_pdf", "summary")
LD_SIZE_OUTPUTS = ("ld", "correlation", "correlation_md", "heatmap", "heatmap_pdf", "summary")


def difficulty_recipe(block: Mapping, augment: Mapping | None = None) -> Recipe:
    """The training recipe of a difficulty (or difficulty.size) block: SGD, no selection (last epoch), no eval;
    with the dataset's ``augment`` block if given (ld_size, like the official exp7.1; exp7.2 used none)."""
    sched = dict(block.get("schedule") or {"name": "none"})
    augment = augment or {}
    return Recipe(
        epochs=int(block["epochs"]),
        batch_size=int(block["batch_size"]),
        lr=float(block["lr"]),
        momentum=float(block["momentum"]),
        weight_decay=float(block["weight_decay"]),
        schedule=str(sched.get("name", "none")),
        step_size=int(sched.get("step_size", 2)),
        gamma=float(sched.get("gamma", 0.7)),
        t_max=sched.get("t_max"),
        shuffle=bool(block["shuffle"]),
        select="last",
        crop_padding=int(augment.get("crop_padding", 0)),
        horizontal_flip=bool(augment.get("horizontal_flip", False)),
    )


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def _check_outputs(outputs: Mapping[str, str], names: Sequence[str], stage: str) -> None:
    missing = set(names) - set(outputs)
    if missing:
        raise ValueError(f"{stage}: outputs lack {sorted(missing)}")


def _all_similarities(cfg, prep, grams, targets_pos, reference, device) -> tuple[np.ndarray, np.ndarray]:
    """kappa(t_c, j) for every target and every training sample j (C, N) with the engine, and its cosine (|phi|^2
    from the per-class Grams)."""
    kcfg = cfg["kernel"]
    model = load_reference_model(cfg, prep.info, reference, device)
    mean, std = prep.info.mean, prep.info.std
    x_all = normalize(to_unit(prep.train.x), mean, std)
    t = torch.as_tensor(targets_pos)
    dtype = {"float32": torch.float32, "float64": torch.float64}[kcfg["dtype"]]
    kappa = (
        lpntk_gram(
            model,
            x_all[t].to(device),
            prep.train.y[t].to(device),
            prep.info.num_classes,
            x2=x_all.to(device),
            y2=prep.train.y.to(device),
            mode=kcfg["mode"],
            sketch_dim=kcfg.get("sketch_dim"),
            seed=int(kcfg.get("sketch_seed", 0)),
            block_size=int(kcfg["block_size"]),
            max_memory_bytes=int(kcfg["max_memory_gb"] * 2**30),
            dtype=dtype,
        )
        .detach()
        .cpu()
        .to(torch.float64)
        .numpy()
    )
    sq = np.zeros(len(prep.train))
    for g in grams:
        sq[g["position"]] = g["sq_norm"]
    denom = np.sqrt(np.clip(np.outer(sq[targets_pos], sq), 0.0, None))
    cos = np.zeros_like(kappa)
    np.divide(kappa, denom, out=cos, where=denom > 0)
    return kappa, cos


def difficulty_stage(
    dataset: str,
    cfg: Mapping,
    kernel_files: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    reference: str | os.PathLike,
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Target, sets, repeated training runs, curves, table and figure of the learning-difficulty control experiment.

    ``outputs`` maps every name of :data:`DIFFICULTY_OUTPUTS` to a path. Returns the summary (also written as JSON).
    """
    dcfg = cfg["difficulty"]
    _check_outputs(outputs, DIFFICULTY_OUTPUTS, "difficulty_stage")
    num, runs, pool = int(dcfg["num"]), int(dcfg["runs"]), dcfg["contradictory"]
    if num < 1 or runs < 1:
        raise ValueError(f"difficulty.num and difficulty.runs must be >= 1, got {num} and {runs}")
    if dcfg["l2_pass"] not in ("train", "eval"):
        raise ValueError(f"difficulty.l2_pass must be 'train' or 'eval', got {dcfg['l2_pass']!r}")
    if pool not in ("all", "class", "none"):
        raise ValueError(f"difficulty.contradictory must be all, class or none, got {pool!r}")
    recipe = difficulty_recipe(dcfg)
    set_threads(threads)
    t0 = time.perf_counter()
    device = select_device(cfg.get("device", "auto"))
    grams = load_class_grams(kernel_files)
    prep = load_prepared(data_dir)
    if len(grams) != prep.info.num_classes:
        raise ValueError(f"{len(grams)} kernel files for {prep.info.num_classes} classes")

    # ---- targets and sets (positions in the training split) ---------------------------------------------------
    targets, chosen, sim_of = [], {s: [] for s in ("easy", "median", "hard")}, []
    for c, g in enumerate(grams):
        gram = g["gram"].astype(np.float64)
        if len(gram) - 1 < num:
            raise ValueError(
                f"difficulty.num = {num} but class {c} has only {len(gram)} training samples; lower difficulty.num"
            )
        t = choose_target(gram, dcfg["target"])
        values = target_similarity(gram, t, dcfg["rank_by"])
        sets = select_sets(values, t, num)
        if 3 * num > len(gram) - 1:
            log.warning(
                "class %d: %d samples besides the target < 3 num = %d: the sets overlap", c, len(gram) - 1, 3 * num
            )
        targets.append(int(g["position"][t]))
        for s in chosen:
            chosen[s].append(g["position"][sets[s]])
        sim_of.append((g["position"], gram[t], target_similarity(gram, t, "cosine")))
    kappa_t = {c: dict(zip(p.tolist(), k.tolist(), strict=True)) for c, (p, k, _) in enumerate(sim_of)}
    cos_t = {c: dict(zip(p.tolist(), v.tolist(), strict=True)) for c, (p, _, v) in enumerate(sim_of)}

    contra_note, available = "contradictory set not requested (difficulty.contradictory = none)", []
    if pool != "none":
        if pool == "class":
            picks = []
            for c, (pos, k_row, c_row) in enumerate(sim_of):
                values = k_row if dcfg["rank_by"] == "lpntk" else c_row
                t_local = int(np.flatnonzero(pos == targets[c])[0])
                got, avail = contradictory_sets(values[None, :], [t_local], num)
                picks.append(pos[got[0]])
                available += avail
        else:
            kappa_all, cos_all = _all_similarities(cfg, prep, grams, np.asarray(targets), reference, device)
            picks, available = contradictory_sets(cos_all if dcfg["rank_by"] == "cosine" else kappa_all, targets, num)
            for c in range(len(grams)):
                for j in picks[c].tolist():
                    kappa_t[c][j], cos_t[c][j] = float(kappa_all[c, j]), float(cos_all[c, j])
        short = [c for c, a in enumerate(available) if a < num]
        if short:
            contra_note = (
                f"contradictory set skipped: the targets of classes {short} have fewer than num = {num} "
                f"samples with negative lpNTK (pool: {pool}; candidates per class: {available})"
            )
            log.warning("%s: %s", dataset, contra_note)
        else:
            chosen["contradictory"] = picks
            contra_note = f"contradictory set built from pool '{pool}' (candidates per class: {available})"
            log.info("%s: %s", dataset, contra_note)
    if dcfg["official_swap"]:
        chosen = {**chosen, **official_swap(chosen)}
    set_names = [s for s in ("easy", "median", "hard", "contradictory") if s in chosen]

    # ---- training runs ----------------------------------------------------------------------------------------
    seeds = [int(dcfg["seed_offset"]) + r for r in range(1, runs + 1)]
    labels = prep.train.y.numpy()
    curves_train, curves_eval, set_rows = [], [], []
    for s in set_names:
        positions, where = training_set_positions(targets, chosen[s])
        for c in range(len(targets)):
            set_rows.append(
                {
                    "set": s,
                    "class": c,
                    "role": "target",
                    "position": targets[c],
                    "index": int(prep.train.index[targets[c]]),
                    "label": int(labels[targets[c]]),
                    "kappa_to_target": kappa_t[c][targets[c]],
                    "cos_to_target": 1.0,
                    "rank": 0,
                }
            )
            for r, j in enumerate(np.asarray(chosen[s][c]).tolist(), start=1):
                set_rows.append(
                    {
                        "set": s,
                        "class": c,
                        "role": "added",
                        "position": j,
                        "index": int(prep.train.index[j]),
                        "label": int(labels[j]),
                        "kappa_to_target": kappa_t[c][j],
                        "cos_to_target": cos_t[c][j],
                        "rank": r,
                    }
                )
        split = prep.train.subset(positions)
        log.info("%s: set %s, %d samples, %d runs of %d epochs", dataset, s, len(split), runs, recipe.epochs)
        out = target_l2_curves(
            lambda: build_from_config(cfg, prep.info),
            split,
            where,
            recipe,
            seeds,
            mean=prep.info.mean,
            std=prep.info.std,
            device=device,
        )
        curves_train.append(out["train"])
        curves_eval.append(out["eval"])
    l2 = {"train": np.stack(curves_train), "eval": np.stack(curves_eval)}  # (S, R, T, E)
    sets_df = pd.DataFrame(set_rows)

    # ---- areas, tables, figure ----------------------------------------------------------------------------------
    main = dcfg["l2_pass"]
    rows, class_rows, per_run = [], [], {}
    for i, s in enumerate(set_names):
        added = sets_df[(sets_df["set"] == s) & (sets_df["role"] == "added")]
        purity = float((added["label"].to_numpy() == added["class"].to_numpy()).mean())
        row = {
            "set": s,
            "n_train": int(len(sets_df[sets_df["set"] == s])),
            "num": num,
            "runs": runs,
            "epochs": recipe.epochs,
            "kappa_to_target_mean": float(added["kappa_to_target"].mean()),
            "cos_to_target_mean": float(added["cos_to_target"].mean()),
            "label_purity": purity,
        }
        for p in ("train", "eval"):
            area = curve_area(l2[p][i].astype(np.float64).mean(axis=1))  # (R,): per run, the targets' mean LD
            if p == main:
                per_run[s] = area
            row[f"auc_{p}_mean"], row[f"auc_{p}_std"] = float(area.mean()), _sd(area)
            final = l2[p][i][:, :, -1].astype(np.float64).mean(axis=1)
            row[f"final_l2_{p}_mean"], row[f"final_l2_{p}_std"] = float(final.mean()), _sd(final)
        rows.append(row)
        per_class_area = curve_area(l2[main][i])  # (R, T)
        for c in range(len(targets)):
            class_rows.append(
                {
                    "set": s,
                    "class": c,
                    "target_index": int(prep.train.index[targets[c]]),
                    "auc_mean": float(per_class_area[:, c].mean()),
                    "auc_std": _sd(per_class_area[:, c]),
                }
            )
    auc_df = pd.DataFrame(rows)
    paired = {
        f"{a}<{b}": float((per_run[a] < per_run[b]).mean()) for a, b in zip(set_names[:-1], set_names[1:], strict=True)
    }
    mapping = "official_swap" if dcfg["official_swap"] else "intended"
    metrics = {f"ld_auc_{s}": float(per_run[s].mean()) for s in set_names}
    metrics.update({f"ld_auc_{s}_std": _sd(per_run[s]) for s in set_names})
    metrics.update({f"ld_paired_{k.replace('<', '_lt_')}": v for k, v in paired.items()})
    summary = {
        "dataset": dataset,
        "mapping": mapping,
        "target_rule": dcfg["target"],
        "rank_by": dcfg["rank_by"],
        "l2_pass": main,
        "num": num,
        "runs": runs,
        "seeds": seeds,
        "sets": set_names,
        "targets": {"position": targets, "index": [int(prep.train.index[t]) for t in targets]},
        "contradictory": contra_note,
        "contradictory_candidates": available,
        "paired_share_of_runs": paired,
        "metrics": metrics,
        "ordering_easy_median_hard": bool(metrics["ld_auc_easy"] < metrics["ld_auc_median"] < metrics["ld_auc_hard"]),
    }
    with tracking_run(
        "difficulty",
        dataset,
        cfg,
        mlflow_cfg,
        tags={"mapping": mapping, "target": dcfg["target"], "l2_pass": main, "sets": ",".join(set_names)},
        params={"seeds": seeds},
        run_name=f"difficulty-{dataset}",
    ) as run:
        save_table(outputs["sets"], sets_df)
        save_npz(
            outputs["curves"],
            l2=l2[main],
            l2_train=l2["train"],
            l2_eval=l2["eval"],
            sets=np.asarray(set_names),
            seeds=np.asarray(seeds, dtype=np.int64),
            classes=np.arange(len(targets)),
            target_position=np.asarray(targets, dtype=np.int64),
            target_index=np.asarray([int(prep.train.index[t]) for t in targets], dtype=np.int64),
        )
        save_table(outputs["auc"], auc_df)
        save_table(outputs["auc_md"], _auc_markdown(auc_df, main))
        save_table(outputs["auc_per_class"], pd.DataFrame(class_rows))
        plot_difficulty_curves(
            l2[main], set_names, dataset, outputs["figure"], outputs["figure_pdf"], l2_pass=main, mapping=mapping
        )
        save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "curves"})
    log.info(
        "%s: area under the targets' L2 curve (%s pass): %s; paired: %s",
        dataset,
        main,
        ", ".join(f"{s} {metrics[f'ld_auc_{s}']:.3f}" for s in set_names),
        paired,
    )
    return summary


def _auc_markdown(df: pd.DataFrame, main: str) -> pd.DataFrame:
    out = df[["set", "n_train", "runs", "epochs", "kappa_to_target_mean", "cos_to_target_mean", "label_purity"]].copy()
    for p in (main, "eval" if main == "train" else "train"):
        out[f"area ({p} pass)"] = [
            f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"auc_{p}_mean"], df[f"auc_{p}_std"], strict=True)
        ]
        out[f"final L2 ({p} pass)"] = [
            f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"final_l2_{p}_mean"], df[f"final_l2_{p}_std"], strict=True)
        ]
    return out.round(4)


# ---------------------------------------------------------------------------------------------------------------
# learning difficulty vs dataset size


def ld_size_stage(
    dataset: str,
    cfg: Mapping,
    data_dir: str | os.PathLike,
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """LD of a per-class pool's samples when trained within quad-tree subsets of every size; correlations.

    ``outputs`` maps every name of :data:`LD_SIZE_OUTPUTS` to a path. Returns the summary (also written as JSON).
    """
    scfg = cfg["difficulty"]["size"]
    _check_outputs(outputs, LD_SIZE_OUTPUTS, "ld_size_stage")
    pool_n = int(scfg["pool_per_class"])
    sizes = size_levels(pool_n, int(scfg["min_size"]))
    recipe = difficulty_recipe(scfg, cfg.get("augment"))
    set_threads(threads)
    t0 = time.perf_counter()
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data_dir)
    labels = prep.train.y.numpy()
    rng = np.random.default_rng(int(scfg["partition_seed"]))
    pools = []
    for c in range(prep.info.num_classes):
        pos = np.flatnonzero(labels == c)
        if len(pos) < pool_n:
            raise ValueError(
                f"difficulty.size.pool_per_class = {pool_n} but class {c} has only {len(pos)} "
                f"training samples; use a power of 4 <= {len(pos)}"
            )
        pools.append(rng.choice(pos, size=pool_n, replace=False))
    n_cls = len(pools)
    ld = np.zeros((n_cls, pool_n, len(sizes)))
    seed = int(scfg["seed"])
    make = lambda: build_from_config(cfg, prep.info)  # noqa: E731
    n_runs = 0
    with tracking_run(
        "ld_size", dataset, cfg, mlflow_cfg, seed=seed, tags={"pool_per_class": pool_n}, run_name=f"ld_size-{dataset}"
    ) as run:
        for si, s in enumerate(sizes):
            t_size = time.perf_counter()
            nodes = [quad_tree_subsets(p, s) for p in pools]
            for k in range(pool_n // s):
                positions = np.concatenate([nodes[c][k] for c in range(n_cls)])
                values = learning_difficulty(
                    make,
                    prep.train.subset(positions),
                    recipe,
                    seed,
                    mean=prep.info.mean,
                    std=prep.info.std,
                    device=device,
                )
                for c in range(n_cls):
                    ld[c, k * s : (k + 1) * s, si] = values[c * s : (c + 1) * s]
                n_runs += 1
            log.info("%s: size %d per class: %d runs in %.1f s", dataset, s, pool_n // s, time.perf_counter() - t_size)
        flat = ld.reshape(n_cls * pool_n, len(sizes))
        pearson = pearson_matrix(flat)
        ranks = np.argsort(np.argsort(flat, axis=0, kind="stable"), axis=0, kind="stable").astype(np.float64)
        spearman = pearson_matrix(ranks)
        all_pos = np.concatenate(pools)
        ld_df = pd.DataFrame(
            {
                "index": prep.train.index[all_pos].numpy(),
                "position": all_pos,
                "label": labels[all_pos],
                "pool_rank": np.tile(np.arange(pool_n), n_cls),
                **{f"ld_size{s}": flat[:, i] for i, s in enumerate(sizes)},
            }
        )
        corr_rows = [
            {"method": m, "size": s, **{f"size{t}": mat[i, j] for j, t in enumerate(sizes)}}
            for m, mat in (("pearson", pearson), ("spearman", spearman))
            for i, s in enumerate(sizes)
        ]
        corr_df = pd.DataFrame(corr_rows)
        metrics = {f"ld_corr_{sizes[0]}_{s}": float(pearson[0, i]) for i, s in enumerate(sizes[1:], start=1)}
        metrics.update({f"ld_spearman_{sizes[0]}_{s}": float(spearman[0, i]) for i, s in enumerate(sizes[1:], start=1)})
        metrics.update({f"ld_mean_size{s}": float(flat[:, i].mean()) for i, s in enumerate(sizes)})
        summary = {
            "dataset": dataset,
            "pool_per_class": pool_n,
            "sizes": sizes,
            "runs": n_runs,
            "seed": seed,
            "partition_seed": int(scfg["partition_seed"]),
            "pearson": pearson,
            "spearman": spearman,
            "metrics": metrics,
        }
        save_table(outputs["ld"], ld_df)
        save_table(outputs["correlation"], corr_df)
        save_table(outputs["correlation_md"], corr_df.round(4))
        plot_ld_correlation(pearson, sizes, dataset, outputs["heatmap"], outputs["heatmap_pdf"], n_samples=len(flat))
        save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "runs": n_runs, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "ld"})
    log.info(
        "%s: LD vs size, %d runs, Pearson with size %d: %s",
        dataset,
        n_runs,
        sizes[0],
        ", ".join(f"{s}: {pearson[0, i]:.3f}" for i, s in enumerate(sizes)),
    )
    return summary
