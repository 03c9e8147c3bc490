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

**Target groups.** Every run of an arm trains on the same C targets, so its runs are not independent replicates of a
claim about targets. Group 0 holds the rule's targets (above); ``random_targets`` adds G = random_targets / C groups
of one random target per class (:func:`lpntk.difficulty.draw_random_targets`, seeded with ``target_seed``,
stratified, never a rule's target). Each group gets every arm built for its own targets (:func:`group_arms`; its
contradictory arm only where its targets have ``num`` candidates, else a note) and ``runs`` runs per arm, run r of
group g seeded with ``seed_offset + g runs + r`` (paired across the group's arms, independent across groups). The
summary keeps group 0's keys as before and adds each target's own per-run areas (:func:`per_target_areas`); the
tables carry a ``group`` column; the figure shows group 0.

Steps: the arms of :mod:`lpntk.difficulty` (``choose_targets``, ``ranked_companies``, ``contradictory_companies``,
``control_companies``), then :func:`train_companies`, :func:`difficulty_tables` and :func:`write_difficulty`. Every
finished (training set, seed) run is kept in a progress folder beside the outputs (:mod:`lpntk.progress`), so a
killed job resumes with the runs it had not finished, with the same results.

Longer than 450 lines because the stage builds, trains and tabulates its arms for every target group, and the
per-target record the claims read is best next to the per-run one it extends.
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
    draw_random_targets,
    label_purity,
    ranked_companies,
    target_l2_curves,
    target_similarity,
    training_set_positions,
)
from ..figures.difficulty_figures import plot_difficulty_curves
from ..grams import ClassGram, load_class_grams
from ..io import save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..lockstep import lockstep_groups
from ..progress import Progress, run_key
from ..train import Recipe, select_device
from .common import check_outputs, log, tracking_run
from .kernel_stage import gram_options
from .torch_setup import build_from_config, load_reference_model, set_threads

__all__ = [
    "DIFFICULTY_OUTPUTS",
    "SET_ORDER",
    "difficulty_recipe",
    "train_companies",
    "difficulty_tables",
    "write_difficulty",
    "group_arms",
    "per_target_areas",
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
    cols = ["group", "ranking", "set", "label_purity", "n_train", "runs", "epochs"]
    out = df[cols + ["kappa_to_target_mean", "cos_to_target_mean"]].copy()
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
    groups: Sequence[Mapping] = (),
) -> None:
    """Every output of the difficulty stage: the curves, figure and arms of target group 0 (``companies``,
    ``curves``, ``seeds``, ``targets_pos``), and in the npz the ``main``-pass curves of every group's arms
    (``groups``: per group its ``companies``, ``curves``, ``seeds`` and ``targets_pos``)."""
    keys = [c.key for c in companies]
    every = [(g, comp.key) for g, grp in enumerate(groups) for comp in grp["companies"]]
    save_table(outputs["sets"], sets)
    save_npz(
        outputs["curves"],
        group_l2=np.stack([groups[g]["curves"][k][main] for g, k in every]) if every else np.zeros((0,)),
        group_of=np.asarray([g for g, _ in every], dtype=np.int64),
        group_rankings=np.asarray([k[0] for _, k in every]),
        group_sets=np.asarray([k[1] for _, k in every]),
        group_seeds=np.asarray([grp["seeds"] for grp in groups], dtype=np.int64),
        group_target_index=np.asarray([[int(index[t]) for t in grp["targets_pos"]] for grp in groups], dtype=np.int64),
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
    purity = {(r["ranking"], r["set"]): r["label_purity"] for _, r in auc[auc["group"] == 0].iterrows()}
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


def group_arms(
    group: int, targets: Sequence[int], grams: Sequence[ClassGram], labels, dcfg: Mapping, rankings, similarity
) -> tuple[list[Company], str, list[int]]:
    """Every arm of one target group, built for its own targets exactly as for the paper's (the companies exclude
    the group's targets), in the order rankings x :data:`SET_ORDER`; the contradictory arm (and its control) only if
    each target has ``num`` candidates, else a note saying it was skipped. The control's draw is seeded with
    ``control_seed + group``. Returns the arms, the contradictory note and the candidates per class."""
    num, pool = int(dcfg["num"]), dcfg["contradictory"]
    targets_pos = [int(g.position[t]) for g, t in zip(grams, targets, strict=True)]
    companies = ranked_companies(grams, targets, rankings, num, bool(dcfg["official_swap"]))
    contra, note, available = contradictory_companies(pool, rankings, num, grams, targets, similarity)
    companies += contra
    if dcfg["control"]:
        companies += control_companies(contra, labels, targets_pos, int(dcfg["control_seed"]) + group)
    order = {s: i for i, s in enumerate(SET_ORDER)}
    companies.sort(key=lambda c: (rankings.index(c.ranking), order[c.set]))
    return companies, note, available


def per_target_areas(groups: Sequence[Mapping], kinds: Sequence[str], index, main: str, rankings) -> dict:
    """Each target's own area under its L2-error curve (``main`` pass, :func:`lpntk.difficulty.curve_area`) in
    every run: ``targets`` (group, kind, class, original index), and per arm ``"<ranking>/<set>"`` one row of
    per-run areas per target, in the order of ``targets``; null rows where the group lacks the arm."""
    targets = [
        {"group": g, "kind": kinds[g], "class": c, "index": int(index[t])}
        for g, grp in enumerate(groups)
        for c, t in enumerate(grp["targets_pos"])
    ]
    order = {s: i for i, s in enumerate(SET_ORDER)}
    keys = sorted(
        {c.key for grp in groups for c in grp["companies"]}, key=lambda k: (rankings.index(k[0]), order[k[1]])
    )
    auc = {}
    for key in keys:
        rows = []
        for grp in groups:
            area = curve_area(grp["curves"][key][main]) if key in grp["curves"] else None  # (R, T)
            rows += [None if area is None else area[:, c].tolist() for c in range(len(grp["targets_pos"]))]
        auc[f"{key[0]}/{key[1]}"] = rows
    return {"targets": targets, "auc": auc}


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
    :data:`DIFFICULTY_OUTPUTS` to a path. Target group 0 holds the rule's targets (``target``), groups 1..G the
    ``random_targets`` drawn by :func:`lpntk.difficulty.draw_random_targets` (seed ``target_seed``); each group gets
    its own arms (:func:`group_arms`) and runs, run r of group g seeded with ``seed_offset + g runs + r`` in every arm
    of the group (paired within the group). Returns the summary (also written as JSON): every arm's per-run areas
    of group 0 (``auc_per_run``), and each target's per-run areas in every group (``per_target``) for the claims.
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
    labels, index = prep.train.y.numpy(), prep.train.index.numpy()

    rule = choose_targets(grams, dcfg["target"], num)
    drawn = draw_random_targets(grams, int(dcfg["random_targets"]), int(dcfg["target_seed"]), rule)
    kinds = [dcfg["target"]] + ["random"] * len(drawn)
    positions = [[int(g.position[t]) for g, t in zip(grams, targets, strict=True)] for targets in [rule, *drawn]]
    similarity_all = None  # kappa and cosine of every group's targets to every training sample, in one pass
    if pool == "all" or (dcfg["control"] and pool != "none"):
        similarity_all = _similarity_to_targets(cfg, prep, grams, np.concatenate(positions), reference, device)
    progress = Progress(outputs["summary"])
    lockstep = bool(dcfg["lockstep"])
    groups, tables = [], []
    for g, (targets, targets_pos) in enumerate(zip([rule, *drawn], positions, strict=True)):
        rows = slice(g * len(grams), (g + 1) * len(grams))
        similarity = None if similarity_all is None else (similarity_all[0][rows], similarity_all[1][rows])
        companies, note, available = group_arms(g, targets, grams, labels, dcfg, rankings, similarity)
        built = any(c.set == "contradictory" for c in companies)
        (log.info if built else log.warning)("%s, target group %d (%s): %s", dataset, g, kinds[g], note)
        seeds = [int(dcfg["seed_offset"]) + g * runs + r for r in range(1, runs + 1)]
        curves = train_companies(
            companies, targets_pos, prep, cfg, recipe, seeds, device, progress, lockstep, int(dcfg["lockstep_max_runs"])
        )
        out = difficulty_tables(companies, curves, targets_pos, prep, similarity, grams, main, runs, recipe.epochs, num)
        for df in out[:3]:
            df.insert(0, "group", g)
        tables.append(out)
        groups.append({"companies": companies, "curves": curves, "seeds": seeds, "targets_pos": targets_pos,
                       "contradictory": note, "contradictory_candidates": available})  # fmt: skip
    sets_df, auc_df, class_df = (pd.concat([t[i] for t in tables], ignore_index=True) for i in range(3))
    per_run, first = tables[0][3], groups[0]
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
        "seeds": first["seeds"],
        "lockstep": lockstep,
        "arms": [{"ranking": c.ranking, "set": c.set} for c in first["companies"]],
        "targets": {"position": first["targets_pos"], "index": [int(index[t]) for t in first["targets_pos"]]},
        "contradictory": first["contradictory"],
        "contradictory_candidates": first["contradictory_candidates"],
        "label_purity": {f"{r['ranking']}/{r['set']}": r["label_purity"] for _, r in tables[0][1].iterrows()},
        "auc_per_run": {f"{r}/{s}": a.tolist() for (r, s), a in per_run.items()},
        "metrics": metrics,
        "random_targets": int(dcfg["random_targets"]),
        "target_seed": int(dcfg["target_seed"]),
        "groups": [
            {
                "group": g,
                "kind": kinds[g],
                "seeds": grp["seeds"],
                "contradictory": grp["contradictory"],
                "arms": [f"{c.ranking}/{c.set}" for c in grp["companies"]],
            }
            for g, grp in enumerate(groups)
        ],  # fmt: skip
        "per_target": per_target_areas(groups, kinds, index, main, rankings),
    }
    tags = {
        "mapping": mapping,
        "target": dcfg["target"],
        "target_groups": str(len(groups)),
        "l2_pass": main,
        "rankings": ",".join(rankings),
        "arms": ",".join(f"{c.ranking}/{c.set}" for c in first["companies"]),
        "lockstep": str(lockstep).lower(),
    }
    with tracking_run(
        "difficulty", dataset, cfg, mlflow_cfg, tags=tags, params={"seeds": first["seeds"]},
        run_name=f"difficulty-{dataset}",
    ) as run:  # fmt: skip
        write_difficulty(
            outputs,
            sets=sets_df,
            auc=auc_df,
            per_class=class_df,
            curves=first["curves"],
            companies=first["companies"],
            seeds=first["seeds"],
            targets_pos=first["targets_pos"],
            index=index,
            main=main,
            mapping=mapping,
            summary=summary,
            dataset=dataset,
            groups=groups,
        )
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "curves"})
    progress.clear()
    log.info(
        "%s: area under the group-0 targets' L2 curve (%s pass): %s",
        dataset,
        main,
        ", ".join(f"{r}/{s} {a.mean():.3f}" for (r, s), a in per_run.items()),
    )
    return summary
