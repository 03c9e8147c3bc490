"""Stage scores: EL2N, GraNd, forgetting, random and every registered score of each training sample (paper-protocols
§4.5; :data:`lpntk.scores.SCORES`).

One job per pruning seed (``scores/seed<s>.csv``: training run s's scores, which select retraining seed s's subsets)
and, with ``scores.enabled``, the mean over ``scores.seeds`` (``scores/scores.csv``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import load_json, load_npz, save_json, save_table
from ..scores import SCORE_NAMES, score_table
from .common import log, tracking_run

__all__ = ["score_settings", "scores_stage"]


def score_settings(cfg: Mapping) -> dict:
    """The resolved score epochs and seeds of a dataset's validated config (lpntk.config checks them: the epochs are
    recorded by training, the seeds are training seeds).

    ``scores.el2n_epoch`` / ``scores.grand_epoch`` default (null) to the last entry of ``train.score_epochs``;
    ``scores.seeds`` (the seeds of the mean table) defaults to every training seed.
    """
    scfg, tcfg = cfg.get("scores") or {}, cfg["train"]
    last = max((int(e) for e in tcfg.get("score_epochs") or []), default=None)
    out = {key: last if scfg.get(key) is None else int(scfg[key]) for key in ("el2n_epoch", "grand_epoch")}
    seeds = scfg.get("seeds")
    out["seeds"] = [int(s) for s in (tcfg["seeds"] if seeds is None else seeds)]
    out["random_seed"] = int(scfg.get("random_seed", 0))
    return out


def scores_stage(
    *,
    dataset: str,
    cfg: Mapping,
    summaries: Sequence[str | os.PathLike],
    dynamics: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    seeds: Sequence[int] | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Score every training sample from the reference runs' dynamics.

    ``summaries`` and ``dynamics`` are training runs' ``summary.json`` and ``dynamics.npz`` (in the same order); the
    runs of ``seeds`` are used: one seed, whose scores select that retraining seed's subsets (the pruning stage), or
    None, ``scores.seeds`` (the mean over seeds: the stage's table of its own). Writes ``outputs["table"]`` (CSV, one
    row per training sample: ``index`` (original), ``position``, ``label``, ``el2n``, ``grand``, ``forgetting``,
    ``random``, standard deviations over seeds, ``never_learned``) and ``outputs["info"]`` (JSON: epochs, seeds, rank
    correlations between the scores).
    """
    settings = score_settings(cfg)
    if seeds is not None:
        train_seeds = [int(s) for s in cfg["train"]["seeds"]]
        missing = sorted({int(s) for s in seeds} - set(train_seeds))
        if missing:
            raise ValueError(f"seeds {missing} are not among train.seeds = {train_seeds}")
        settings["seeds"] = [int(s) for s in seeds]
    if len(summaries) != len(dynamics):
        raise ValueError(f"{len(summaries)} training summaries but {len(dynamics)} dynamics files")
    runs = {}
    for summary, dyn in zip(summaries, dynamics, strict=True):
        seed = int(load_json(summary, what="training summary")["seed"])
        if seed in settings["seeds"]:
            runs[seed] = Path(dyn)
    missing = sorted(set(settings["seeds"]) - set(runs))
    if missing:
        raise ValueError(f"no training run for scores.seeds {missing} among {[str(p) for p in summaries]}")
    one = seeds is not None and len(runs) == 1  # one reference run's scores: the pruning of that seed
    seeds = sorted(runs)
    with tracking_run(
        "scores",
        dataset,
        cfg,
        mlflow_cfg,
        seed=seeds[0] if one else None,
        tags={"n_seeds": len(seeds)},
        params={
            "scores.resolved_el2n_epoch": settings["el2n_epoch"],
            "scores.resolved_grand_epoch": settings["grand_epoch"],
        },
        run_name=f"scores-{dataset}" + (f"-seed{seeds[0]}" if one else ""),
        live=False,
    ) as run:
        dyn = [load_npz(runs[s], what="training dynamics") for s in seeds]
        cols = score_table(
            dyn,
            el2n_epoch=settings["el2n_epoch"],
            grand_epoch=settings["grand_epoch"],
            random_seed=settings["random_seed"],
            sources=[str(runs[s]) for s in seeds],
        )
        table = pd.DataFrame(
            {
                "index": cols["index"],
                "position": np.arange(len(cols["index"])),
                **{k: v for k, v in cols.items() if k != "index"},
            }
        )
        names = list(SCORE_NAMES)  # every registered score, then random
        scored = [n for n in names if n != "random"]
        corr = table[names].rank().corr().round(6)
        info = {
            "dataset": dataset,
            "n": len(table),
            "seeds": seeds,
            **{k: settings[k] for k in ("el2n_epoch", "grand_epoch", "random_seed")},
            "never_learned_any_seed": int((table["never_learned"] > 0).sum()),
            "spearman": {a: {b: float(corr.loc[a, b]) for b in names} for a in names},
            "forgetting_never_learned_value": "E (number of epochs of the run), above any learned sample",
        }
        save_table(outputs["table"], table)
        save_json(outputs["info"], info)
        metrics = {"n": len(table), "never_learned_any_seed": info["never_learned_any_seed"]}
        for i, a in enumerate(scored):
            for b in scored[i + 1 :]:
                metrics[f"spearman_{a}_{b}"] = info["spearman"][a][b]
        for name in scored:
            metrics[f"{name}_mean"] = float(table[name].mean())
        run.log_metrics(metrics)
        run.log_outputs(dict(outputs))
    log.info(
        "%s: scores of %d samples from seeds %s (EL2N epoch %d, GraNd epoch %d)",
        dataset,
        len(table),
        seeds,
        settings["el2n_epoch"],
        settings["grand_epoch"],
    )
    return table
