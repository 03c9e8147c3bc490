"""Stage difficulty: controlling a target's learning difficulty with the company it is trained with (paper-protocols
§4.2; slides "Use Case 1"). Method: :mod:`lpntk.difficulty`.

Per class a target and, per ranking of the class's samples by their similarity to it (``rank_by``: raw lpNTK kappa,
and its cosine, which the slides use to define the relations), the company sets easy / median / hard. The
``contradictory`` set takes samples with kappa(t_c, j) < 0, the most negative first, from the whole training set
(``contradictory: all``; kappa(t_c, j) for every training sample j is computed with the engine at the reference
checkpoint) or from the target's class (``class``, where it is the hard set whenever it exists); it is built only
when every class's target has ``num`` candidates. Drawn from the whole set, the contradictory company mostly carries
other labels, so it changes the training set's label mix as well as its lpNTK: the ``control`` arm (``control:
true``) adds random samples with the same label composition, and the claim compares contradictory against it. Every
arm's label purity is reported.

One training set per arm = the union over classes of [t_c + its company]; ``runs`` independent trainings per arm, run
r seeded with ``seed_offset + r`` in every arm (paired runs); arms with the same training set share their runs. The
targets' L2 error per epoch gives each run's area under the curve (the targets' learning difficulty).

Steps: the arms of :mod:`lpntk.difficulty` (``choose_targets``, ``ranked_companies``, ``contradictory_companies``,
``control_companies``), then :func:`train_companies`, :func:`difficulty_tables` and :func:`write_difficulty`. Every
finished (training set, seed) run is kept in a progress folder beside the outputs (:mod:`lpntk.progress`), so a
killed job resumes with the runs it had not finished, with the same results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from ..data import load_prepared, normalize, to_unit
from ..difficulty import (
    Company,
    choose_targets,
    contradictory_companies,
    control_companies,
    curve_area,
    label_purity,
    ranked_companies,
    target_l2_curves,
    target_similarity,
    training_set_positions,
)
from ..figures.difficulty import plot_difficulty_curves
from ..grams import ClassGram, load_class_grams
from ..io import save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..lockstep import lockstep_groups
from ..progress import Progress, run_key
from ..train import Recipe, select_device
from .common import check_outputs, log, tracking_run
from .kernel import gram_options
from .model import build_from_config, load_reference_model, set_threads

__all__ = [
    "DIFFICULTY_OUTPUTS",
    "SET_ORDER",
    "difficulty_recipe",
    "train_companies",
    "difficulty_tables",
    "write_difficulty",
    "difficulty_stage",
]

DIFFICULTY_OUTPUTS = ("sets", "curves", "auc", "auc_md", "auc_per_class", "figure", "figure_pdf", "summary")
SET_ORDER = ("easy", "median", "hard", "contradictory", "control")


def difficulty_recipe(block: Mapping, augment: Mapping | None = None) -> Recipe:
    """The training recipe of a difficulty (or difficulty.size) block: SGD, no selection (last epoch), no eval;
    with the dataset's ``augment`` block if given (ld_size, like the official exp7.1; exp7.2 used none)."""
    sched = block["schedule"]
    augment = augment or {"crop_padding": 0, "horizontal_flip": False}
    return Recipe(
        epochs=int(block["epochs"]),
        batch_size=int(block["batch_size"]),
        lr=float(block["lr"]),
        momentum=float(block["momentum"]),
        weight_decay=float(block["weight_decay"]),
        schedule=str(sched["name"]),
        step_size=int(sched["step_size"]),
        gamma=float(sched["gamma"]),
        t_max=sched["t_max"],
        shuffle=bool(block["shuffle"]),
        select="last",
        crop_padding=int(augment["crop_padding"]),
        horizontal_flip=bool(augment["horizontal_flip"]),
    )


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


# ---------------------------------------------------------------------------------------------- the engine


def _similarity_to_targets(cfg, prep, grams, targets_pos, reference, device) -> tuple[np.ndarray, np.ndarray]:
    """kappa(t_c, j) for every target and every training sample j (C, N) with the engine, and its cosine (|phi|^2
    from the per-class Grams)."""
    model = load_reference_model(cfg, prep.info, reference, device)
    x_all = normalize(to_unit(prep.train.x), prep.info.mean, prep.info.std)
    t = torch.as_tensor(targets_pos)
    y = prep.train.y
    kappa = lpntk_gram(
        model,
        x_all[t].to(device),
        y[t].to(device),
        prep.info.num_classes,
        x2=x_all.to(device),
        y2=y.to(device),
        **gram_options(cfg["kernel"]),
    )
    kappa = kappa.detach().cpu().double().numpy()
    sq = np.zeros(len(prep.train))
    for g in grams:
        sq[g.position] = g.sq_norm
    denom = np.sqrt(np.clip(np.outer(sq[targets_pos], sq), 0.0, None))
    cos = np.zeros_like(kappa)
    np.divide(kappa, denom, out=cos, where=denom > 0)
    return kappa, cos


def train_companies(
    companies: Sequence[Company],
    targets_pos: Sequence[int],
    prep,
    cfg,
    recipe: Recipe,
    seeds: Sequence[int],
    device,
    progress: Progress | None = None,
    lockstep: bool = False,
    max_runs: int = 64,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """The targets' L2 curves ("train" and "eval" passes, (R, T, E) each) of every arm; arms whose training set is
    the same (e.g. a set both rankings choose) share one set of runs. With ``progress`` every finished run (training
    set, seed) is recorded there and a rerun of a killed job loads it instead of training it again (the key: the
    training set's original indices and labels, the targets, the seed, the recipe, the model, the normalisation and
    the lockstep switch). ``lockstep``: a set's seeds train together (:func:`lpntk.lockstep.train_lockstep`),
    ``max_runs`` at a time.
    """
    done: dict[bytes, dict[str, np.ndarray]] = {}
    out = {}
    for comp in companies:
        positions, where = training_set_positions(targets_pos, comp.picks)
        key = positions.tobytes()
        if key not in done:
            split = prep.train.subset(positions)
            log.info("set %s/%s: %d samples, %d runs of %d epochs", comp.ranking, comp.set, len(split), len(seeds),
                     recipe.epochs)  # fmt: skip
            set_id = run_key(index=split.index.numpy(), y=split.y.numpy(), targets=where)[:16]
            runs: dict[int, dict[str, np.ndarray]] = {}
            keys = {}
            for seed in seeds:
                if progress is not None:
                    keys[seed] = run_key(
                        set=set_id, seed=int(seed), recipe=asdict(recipe), model=cfg["model"], mean=prep.info.mean,
                        std=prep.info.std, lockstep=lockstep,
                    )  # fmt: skip
                    rec = progress.load(f"set-{set_id}-seed{seed}", keys[seed])
                    if rec is not None:
                        runs[seed] = rec
            pending = [seed for seed in seeds if seed not in runs]
            for group in lockstep_groups(pending, lockstep, max_runs):  # each run kept as its group ends
                curves = target_l2_curves(
                    lambda: build_from_config(cfg, prep.info), split, where, recipe, group, mean=prep.info.mean,
                    std=prep.info.std, device=device, lockstep=lockstep,
                )  # fmt: skip
                for r, seed in enumerate(group):
                    runs[seed] = {k: v[r] for k, v in curves.items()}
                    if progress is not None:
                        progress.save(f"set-{set_id}-seed{seed}", keys[seed], **runs[seed])
            done[key] = {p: np.stack([runs[seed][p] for seed in seeds]) for p in ("train", "eval")}
        out[comp.key] = done[key]
    return out


# ---------------------------------------------------------------------------------------------- tables


def difficulty_tables(
    companies: Sequence[Company],
    curves,
    targets_pos: Sequence[int],
    prep,
    similarity,
    grams: Sequence[ClassGram],
    main: str,
    runs: int,
    epochs: int,
    num: int,
):
    """The sets table (every target and added sample with its kappa and cosine to the target), the per-arm table
    (areas, final L2, label purity), the per-class table, and the per-run areas of the ``main`` pass by arm."""
    labels = prep.train.y.numpy()
    index = prep.train.index.numpy()
    within = {}  # (class, position) -> (kappa, cos) from the class Gram
    for c, g in enumerate(grams):
        t = int(np.flatnonzero(g.position == targets_pos[c])[0])
        k_row = g.gram[t].astype(np.float64)
        c_row = target_similarity(g.gram.astype(np.float64), t, "cosine")
        within.update({(c, int(p)): (float(k), float(v)) for p, k, v in zip(g.position, k_row, c_row, strict=True)})

    def sim(c: int, j: int) -> tuple[float, float]:
        if (c, j) in within:
            return within[c, j]
        if similarity is not None:
            return float(similarity[0][c, j]), float(similarity[1][c, j])
        return float("nan"), float("nan")

    set_rows, rows, class_rows, per_run = [], [], [], {}
    for comp in companies:
        for c, t in enumerate(targets_pos):
            entries = [("target", t, 0)] + [("added", int(j), r) for r, j in enumerate(comp.picks[c], start=1)]
            for role, j, r in entries:
                k, v = sim(c, j)
                set_rows.append(
                    {
                        "ranking": comp.ranking,
                        "set": comp.set,
                        "class": c,
                        "role": role,
                        "position": j,
                        "index": int(index[j]),
                        "label": int(labels[j]),
                        "kappa_to_target": k,
                        "cos_to_target": 1.0 if role == "target" else v,
                        "rank": r,
                    }
                )
        added = [r for r in set_rows if r["ranking"] == comp.ranking and r["set"] == comp.set and r["role"] == "added"]
        row = {
            "ranking": comp.ranking,
            "set": comp.set,
            "n_train": len(targets_pos) + len(added),
            "num": num,
            "runs": runs,
            "epochs": epochs,
            "kappa_to_target_mean": float(np.mean([r["kappa_to_target"] for r in added])),
            "cos_to_target_mean": float(np.mean([r["cos_to_target"] for r in added])),
            "label_purity": label_purity(labels, comp.picks, labels[list(targets_pos)]),
        }
        for p in ("train", "eval"):
            l2 = curves[comp.key][p].astype(np.float64)  # (R, T, E)
            area = curve_area(l2.mean(axis=1))  # (R,): per run, the targets' mean LD
            if p == main:
                per_run[comp.key] = area
            row[f"auc_{p}_mean"], row[f"auc_{p}_std"] = float(area.mean()), _sd(area)
            final = l2[:, :, -1].mean(axis=1)
            row[f"final_l2_{p}_mean"], row[f"final_l2_{p}_std"] = float(final.mean()), _sd(final)
        rows.append(row)
        per_class_area = curve_area(curves[comp.key][main])  # (R, T)
        for c, t in enumerate(targets_pos):
            class_rows.append(
                {
                    "ranking": comp.ranking,
                    "set": comp.set,
                    "class": c,
                    "target_index": int(index[t]),
                    "auc_mean": float(per_class_area[:, c].mean()),
                    "auc_std": _sd(per_class_area[:, c]),
                }
            )
    return pd.DataFrame(set_rows), pd.DataFrame(rows), pd.DataFrame(class_rows), per_run


def _auc_markdown(df: pd.DataFrame, main: str) -> pd.DataFrame:
    out = df[
        ["ranking", "set", "label_purity", "n_train", "runs", "epochs", "kappa_to_target_mean", "cos_to_target_mean"]
    ].copy()
    for p in (main, "eval" if main == "train" else "train"):
        out[f"area ({p} pass)"] = [
            f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"auc_{p}_mean"], df[f"auc_{p}_std"], strict=True)
        ]
        out[f"final L2 ({p} pass)"] = [
            f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"final_l2_{p}_mean"], df[f"final_l2_{p}_std"], strict=True)
        ]
    return out.round(4)


def write_difficulty(
    outputs: Mapping[str, str],
    *,
    sets: pd.DataFrame,
    auc: pd.DataFrame,
    per_class: pd.DataFrame,
    curves,
    companies: Sequence[Company],
    seeds,
    targets_pos,
    index,
    main: str,
    mapping: str,
    summary: Mapping,
    dataset: str,
) -> None:
    """Every output of the difficulty stage."""
    keys = [c.key for c in companies]
    save_table(outputs["sets"], sets)
    save_npz(
        outputs["curves"],
        l2=np.stack([curves[k][main] for k in keys]),
        l2_train=np.stack([curves[k]["train"] for k in keys]),
        l2_eval=np.stack([curves[k]["eval"] for k in keys]),
        rankings=np.asarray([k[0] for k in keys]),
        sets=np.asarray([k[1] for k in keys]),
        seeds=np.asarray(seeds, dtype=np.int64),
        classes=np.arange(len(targets_pos)),
        target_position=np.asarray(targets_pos, dtype=np.int64),
        target_index=np.asarray([int(index[t]) for t in targets_pos], dtype=np.int64),
    )
    save_table(outputs["auc"], auc)
    save_table(outputs["auc_md"], _auc_markdown(auc, main))
    save_table(outputs["auc_per_class"], per_class)
    purity = {(r["ranking"], r["set"]): r["label_purity"] for _, r in auc.iterrows()}
    plot_difficulty_curves(
        {k: curves[k][main] for k in keys},
        purity,
        dataset,
        outputs["figure"],
        outputs["figure_pdf"],
        l2_pass=main,
        mapping=mapping,
    )
    save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes


# ---------------------------------------------------------------------------------------------- the stage


def difficulty_stage(
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
    """Targets, arms, repeated training runs, curves, tables and figure of the learning-difficulty experiment.

    ``kernels``: the kernel files; ``data``: the prepared-data files; ``outputs`` maps every name of
    :data:`DIFFICULTY_OUTPUTS` to a path. Returns the summary (also written as JSON), which holds every arm's
    per-run areas (``auc_per_run``; runs are paired across arms) for the claims.
    """
    dcfg = cfg["difficulty"]
    check_outputs(outputs, DIFFICULTY_OUTPUTS, "difficulty_stage")
    num, runs, pool, main = int(dcfg["num"]), int(dcfg["runs"]), dcfg["contradictory"], dcfg["l2_pass"]
    rankings = list(dict.fromkeys(dcfg["rank_by"]))
    recipe = difficulty_recipe(dcfg)
    set_threads(threads)
    t0 = time.perf_counter()
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data)
    grams = load_class_grams(kernels, prep.info.num_classes)
    labels = prep.train.y.numpy()

    targets = choose_targets(grams, dcfg["target"], num)
    targets_pos = [int(g.position[t]) for g, t in zip(grams, targets, strict=True)]
    companies = ranked_companies(grams, targets, rankings, num, bool(dcfg["official_swap"]))
    similarity = None
    if pool == "all" or (dcfg["control"] and pool != "none"):
        similarity = _similarity_to_targets(cfg, prep, grams, np.asarray(targets_pos), reference, device)
    contra, contra_note, available = contradictory_companies(pool, rankings, num, grams, targets, similarity)
    (log.info if contra else log.warning)("%s: %s", dataset, contra_note)
    companies += contra
    if dcfg["control"]:
        companies += control_companies(contra, labels, targets_pos, int(dcfg["control_seed"]))
    order = {s: i for i, s in enumerate(SET_ORDER)}
    companies.sort(key=lambda c: (rankings.index(c.ranking), order[c.set]))

    seeds = [int(dcfg["seed_offset"]) + r for r in range(1, runs + 1)]
    progress = Progress(outputs["summary"])
    lockstep = bool(dcfg["lockstep"])
    curves = train_companies(
        companies, targets_pos, prep, cfg, recipe, seeds, device, progress, lockstep, int(dcfg["lockstep_max_runs"])
    )
    sets_df, auc_df, class_df, per_run = difficulty_tables(
        companies, curves, targets_pos, prep, similarity, grams, main, runs, recipe.epochs, num
    )
    mapping = "official_swap" if dcfg["official_swap"] else "intended"
    metrics = {f"ld_auc_{r}_{s}": float(a.mean()) for (r, s), a in per_run.items()}
    metrics.update({f"ld_auc_{r}_{s}_std": _sd(a) for (r, s), a in per_run.items()})
    summary = {
        "dataset": dataset,
        "mapping": mapping,
        "target_rule": dcfg["target"],
        "rankings": rankings,
        "l2_pass": main,
        "num": num,
        "runs": runs,
        "seeds": seeds,
        "lockstep": lockstep,
        "arms": [{"ranking": c.ranking, "set": c.set} for c in companies],
        "targets": {"position": targets_pos, "index": [int(prep.train.index[t]) for t in targets_pos]},
        "contradictory": contra_note,
        "contradictory_candidates": available,
        "label_purity": {f"{r['ranking']}/{r['set']}": r["label_purity"] for _, r in auc_df.iterrows()},
        "auc_per_run": {f"{r}/{s}": a.tolist() for (r, s), a in per_run.items()},
        "metrics": metrics,
    }
    tags = {
        "mapping": mapping,
        "target": dcfg["target"],
        "l2_pass": main,
        "rankings": ",".join(rankings),
        "arms": ",".join(f"{c.ranking}/{c.set}" for c in companies),
        "lockstep": str(lockstep).lower(),
    }
    with tracking_run(
        "difficulty", dataset, cfg, mlflow_cfg, tags=tags, params={"seeds": seeds}, run_name=f"difficulty-{dataset}"
    ) as run:
        write_difficulty(
            outputs,
            sets=sets_df,
            auc=auc_df,
            per_class=class_df,
            curves=curves,
            companies=companies,
            seeds=seeds,
            targets_pos=targets_pos,
            index=prep.train.index.numpy(),
            main=main,
            mapping=mapping,
            summary=summary,
            dataset=dataset,
        )
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "curves"})
    progress.clear()
    log.info(
        "%s: area under the targets' L2 curve (%s pass): %s",
        dataset,
        main,
        ", ".join(f"{r}/{s} {a.mean():.3f}" for (r, s), a in per_run.items()),
    )
    return summary
