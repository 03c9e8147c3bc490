"""The claims' design on synthetic stage outputs whose answer is known by construction: the unit of each claim, the
roles (primary, secondary under Holm, exploratory), the trivial baselines, the minimum event count, the rows of a
stage that is off, dropped pairs, and the stage's files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lpntk.claims import (
    check_dropped,
    design_for,
    difficulty_claims,
    forgetting_claims,
    headlines,
    ld_size_claims,
    pruning_claims,
    settle,
    small_cluster_claims,
)


def _difficulty_summary(per_target_effect, runs=6, noise=0.05, seed=0):
    """Per-target areas: easy 5, median 5 + e_t, hard 5 + 2 e_t (+ noise), for targets of kind random; the per-run
    areas are each run's mean over the targets."""
    rng = np.random.default_rng(seed)
    eff = np.asarray(per_target_effect, dtype=float)
    auc = {}
    for arm, k in (("easy", 0), ("median", 1), ("hard", 2)):
        auc[f"lpntk/{arm}"] = (5 + k * eff[:, None] + rng.normal(0, noise, (len(eff), runs))).tolist()
    targets = [{"group": 1 + i // 10, "kind": "random", "class": i % 10, "index": i} for i in range(len(eff))]
    per_run = {k: np.asarray(v).mean(axis=0).tolist() for k, v in auc.items()}
    return {
        "rankings": ["lpntk"],
        "l2_pass": "train",
        "auc_per_run": per_run,
        "per_target": {"targets": targets, "auc": auc},
    }


def _settled(rows, **design):
    d = design_for({"claims": design})
    out = []
    for cid in dict.fromkeys(r.claim for r in rows):
        out += settle([r for r in rows if r.claim == cid], d)
    return out


def test_c1_unit_is_the_target():
    # every target shifts: supported across targets, the share of targets agreeing is 100 %
    rows = _settled(difficulty_claims("d", _difficulty_summary(np.full(20, 0.5))))
    prim = next(r for r in rows if r.role == "primary")
    assert prim.verdict == "supported" and prim.unit == "target" and prim.n == 20
    comps = [r for r in rows if r.role == "primary component"]
    assert len(comps) == 2 and all(r.extra["share_agree"] == 1.0 for r in comps)
    # one target drives the effect: across runs (all runs share it) it looks supported; across targets it is not
    eff = np.zeros(20)
    eff[0] = 10.0
    rows = _settled(difficulty_claims("d", _difficulty_summary(eff, noise=0.01)))
    prim = next(r for r in rows if r.role == "primary")
    assert prim.verdict == "inconclusive"
    runs = [r for r in rows if r.role == "exploratory" and r.comparison.startswith("median - easy")]
    assert runs[0].verdict == "supported" and runs[0].unit == "run"  # the old, wrong unit: shown, never counted
    assert [h["verdict"] for h in headlines(rows)] == ["inconclusive"]


def _forgetting_runs(n, entk, lpntk, events=100, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r = {"n_true_events": events}
        for sfx in ("", "_prob"):
            for key in ("mcc", "f1", "stepwise_f1"):
                r[f"{key}_entk{sfx}"] = entk + rng.normal(0, 0.01)
                r[f"{key}_lpntk{sfx}"] = lpntk + rng.normal(0, 0.01)
        r.update({"mcc_none": 0.0, "mcc_all": 0.0, "mcc_random": 0.0, "f1_none": 0.0, "f1_all": 0.04})
        r.update({"f1_random": 0.02, "stepwise_f1_none": 0.97, "stepwise_f1_all": 0.05, "stepwise_f1_random": 0.3})
        out.append(r)
    return out


def test_c2_mcc_primary_trivial_baselines_and_event_minimum():
    runs = _forgetting_runs(8, 0.5, 0.3)
    paper = {"entk": {"f1": (89.96, 7.1)}, "lpntk": {"f1": (49.54, 6.99)}}
    rows = _settled(forgetting_claims("m", {"plain": runs, "official": runs}, paper))
    prim = [r for r in rows if r.role == "primary"]
    assert len(prim) == 1 and prim[0].comparison == "eNTK - lpNTK (plain recipe, logit space)"
    assert prim[0].metric.startswith("MCC") and prim[0].verdict == "supported"
    assert prim[0].effect == pytest.approx(20.0, abs=1.0) and "none 0.0" in prim[0].baseline
    assert sum(r.role == "secondary" for r in rows) == 3  # the other recipe x space combinations
    step = next(r for r in rows if r.metric.startswith("stepwise") and r.role == "exploratory")
    assert "none 97.0" in step.baseline and step.paper_effect == pytest.approx(40.42)
    # too few events in a seed: no verdict on the decided rows, the note says why
    few = _forgetting_runs(8, 0.5, 0.3, events=12)
    rows = _settled(forgetting_claims("m", {"plain": few}, None))
    prim = next(r for r in rows if r.role == "primary")
    assert prim.verdict == "inconclusive: too few events" and "8 of 8 seeds below the minimum of 30" in prim.note


def _pruning_table(n=6, lp=0.0, base=0.0, full_level=98.0, keeps=(0.9, 0.5), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n):
        level = full_level + rng.normal(0, 0.1)
        rows.append(dict(method="full", experiment="table", keep=1.0, seed=s, acc=level))
        for k in keeps:
            rows.append(dict(method="lpntk", experiment="table", keep=k, seed=s, acc=level + lp))
            for m in ("el2n", "grand", "forgetting", "random"):
                rows.append(dict(method=m, experiment="table", keep=k, seed=s, acc=level + base))
    df = pd.DataFrame(rows)
    df["subset"] = df["method"] + "-k" + df["keep"].astype(str)
    df["test_acc_best_val"] = (df["acc"] + rng.normal(0, 0.02, len(df))) / 100
    return df


def test_c3_declared_keep_margin_and_intersection_union():
    rows = _settled(
        pruning_claims("m", _pruning_table(lp=0.3), None, {"C3a": {"keep": 0.9, "margin": 0.2}, "C3b": {"keep": 0.5}})
    )
    c3b = [r for r in rows if r.claim == "C3b"]
    prim = next(r for r in c3b if r.role == "primary")
    assert prim.verdict == "supported" and "intersection-union of 4" in prim.test and "0.5" in prim.comparison
    assert sum(r.role == "primary component" for r in c3b) == 4 and sum(r.role == "secondary" for r in c3b) == 4
    assert all(np.isfinite(r.p_adj) for r in c3b if r.role == "secondary")
    c3a = next(r for r in rows if r.claim == "C3a" and r.role == "primary")
    assert c3a.margin == 0.2 and c3a.level == pytest.approx(0.9) and c3a.verdict == "supported"
    # lpNTK equal to three baselines, better than one: the intersection-union is not supported
    df = _pruning_table(lp=0.0)
    df.loc[(df["method"] == "random"), "test_acc_best_val"] -= 0.01
    rows = _settled(pruning_claims("m", df, None))
    assert next(r for r in rows if r.claim == "C3b" and r.role == "primary").verdict == "inconclusive"
    # lpNTK a full point below the full set, margin 0.2: C3a contradicted
    rows = _settled(pruning_claims("m", _pruning_table(lp=-1.0), None))
    assert next(r for r in rows if r.claim == "C3a" and r.role == "primary").verdict == "contradicted"
    # three seeds: provisional, never supported
    rows = _settled(pruning_claims("m", _pruning_table(n=3, lp=1.0), None))
    assert {r.verdict for r in rows if r.role in ("primary", "secondary")} == {"provisional"}


def test_c4_rows_print_the_fractions_run_and_the_declared_primary():
    rows = []
    rng = np.random.default_rng(1)
    for s in range(6):
        for frac in (0.05, 0.2):
            for method, sub, acc in (("small_clusters", "small", 0.80), ("random_removal", "random", 0.85)):
                rows.append(
                    dict(
                        subset=f"d{frac}-{sub}-r0.3",
                        method=method,
                        experiment="small_clusters",
                        keep=0.7,
                        seed=s,
                        data_fraction=frac,
                        remove=0.3,
                        kernel="full",
                        test_acc_best_val=acc + rng.normal(0, 0.002),
                    )
                )
    for s in range(6):  # the unpruned base of each fraction (remove 0) is no candidate for the primary
        for frac in (0.05, 0.2):
            rows.append(
                dict(
                    subset=f"d{frac}-base",
                    method="base",
                    experiment="small_clusters",
                    keep=1.0,
                    seed=s,
                    data_fraction=frac,
                    remove=0.0,
                    kernel="full",
                    test_acc_best_val=0.9,
                )
            )
    out = _settled(small_cluster_claims("d", pd.DataFrame(rows)))
    prim = [r for r in out if r.role == "primary"]
    assert len(prim) == 1 and "5% of the data, removing 30%" in prim[0].comparison  # the smallest fraction run
    assert prim[0].verdict == "contradicted" and any("20% of the data" in r.comparison for r in out)
    out = _settled(small_cluster_claims("d", pd.DataFrame(rows), {"C4": {"data_fraction": 0.2}}))
    assert "20% of the data" in next(r for r in out if r.role == "primary").comparison


def test_c5_per_class():
    rng = np.random.default_rng(0)
    blocks, labels = [], []
    for c in range(10):
        base = rng.normal(size=64)
        near = base + rng.normal(0, 0.3, 64)
        far = base + rng.normal(0, 2.0, 64)
        blocks.append(np.stack([base, near, far], axis=1))
        labels += [c] * 64
    rows = _settled(ld_size_claims("m", np.vstack(blocks), [64, 16, 1], labels))
    prim = next(r for r in rows if r.role == "primary")
    assert prim.unit == "class" and prim.n == 10 and prim.verdict == "supported" and "per class" in prim.comparison
    pooled = next(r for r in rows if r.role == "exploratory")
    assert "no test" in pooled.verdict and not np.isfinite(pooled.p)


def test_dropped_pairs_are_counted_and_too_many_stop():
    df = _pruning_table(n=6, lp=0.3)
    df.loc[(df["method"] == "el2n") & (df["seed"] < 2), "test_acc_best_val"] = math.nan
    rows = pruning_claims("m", df, None)
    el2n = [r for r in rows if "el2n" in r.comparison]
    assert {r.dropped for r in el2n} == {2}
    check_dropped(rows, 0.5)
    with pytest.raises(ValueError, match="dropped 2 of 6 pairs.*claims.max_dropped_share"):
        check_dropped(rows, 0.2)


def test_claims_stage_files_headline_and_stages_off(tmp_path):
    from lpntk.stages.claims_stage import claims_stage

    (tmp_path / "d.json").write_text(json.dumps(_difficulty_summary(np.full(20, 0.5))))
    runs = _forgetting_runs(6, 0.5, 0.3)
    (tmp_path / "f.json").write_text(json.dumps({"recipes": {"plain": {"runs": runs}, "official": {"runs": runs}}}))
    outs = {k: str(tmp_path / f"claims.{e}") for k, e in (("csv", "csv"), ("md", "md"), ("summary", "json"))}
    table = claims_stage(
        dataset="mnist",
        cfg={"source": "torchvision", "name": "MNIST"},
        outputs=outs,
        difficulty=tmp_path / "d.json",
        forgetting=tmp_path / "f.json",
        mlflow_cfg={"enabled": False},
    )
    off = table[table["verdict"] == "not run: stage off"]
    assert sorted(off["claim"]) == ["C3a", "C3b", "C4", "C5"]
    summary = json.loads(open(outs["summary"]).read())
    assert [h["claim"] for h in summary["headline"]] == ["C1", "C2", "C3a", "C3b", "C4", "C5"]
    assert summary["design"]["C3a"]["margin"] == 0.2 and summary["verdicts"]["supported"] == 2
    md = open(outs["md"]).read()
    assert "| primary comparison |" in md and "p (Holm)" in md and "not run: stage off" in md


def test_library_defaults_are_the_schema_defaults():
    from pathlib import Path

    from lpntk.claims import DEFAULT_DESIGN
    from lpntk.config import load_schema

    root = Path(__file__).resolve().parents[2]
    schema = load_schema(root / "workflow" / "schemas" / "config.schema.yaml")["$defs"]["claims"]["properties"]
    for key, value in DEFAULT_DESIGN.items():
        if isinstance(value, dict):
            assert {k: p["default"] for k, p in schema[key]["properties"].items()} == value, key
        else:
            assert schema[key]["default"] == value, key


def test_c1_arm_missing_for_some_groups_is_not_a_dropped_pair():
    summary = _difficulty_summary(np.full(20, 0.5))
    auc = summary["per_target"]["auc"]
    auc["lpntk/contradictory"] = [None] * 10 + [[9.0] * 6] * 10  # the first group could not build the arm
    auc["lpntk/control"] = [None] * 10 + [[8.0 + 0.01 * i] * 6 for i in range(10)]
    rows = difficulty_claims("d", summary)
    check_dropped(rows, 0.2)  # nothing dropped: the targets without the arm are left out, not counted as NaN
    row = next(r for r in rows if r.comparison.startswith("contradictory - control") and r.unit == "target")
    assert row.n == 10 and row.dropped == 0 and "10 targets' groups could not build" in row.note
    auc["lpntk/contradictory"] = [None] * 20
    rows = difficulty_claims("d", summary)
    row = next(r for r in rows if r.comparison.startswith("contradictory - control") and r.unit == "target")
    assert row.verdict == "not measured"


def test_exploratory_rows_may_drop_pairs():
    runs = _forgetting_runs(6, 0.5, 0.3)
    for r in runs:  # a window without events: F1 undefined, MCC 0 by convention
        r["f1_entk"] = r["f1_lpntk"] = math.nan
    rows = forgetting_claims("m", {"plain": runs}, None)
    check_dropped(rows, 0.2)
    f1 = next(r for r in rows if r.metric.startswith("event-class F1") and r.extra["space"] == "logit")
    assert f1.role == "exploratory" and f1.dropped == 6


def test_a_primary_component_not_run_makes_the_primary_not_measured():
    df = _pruning_table(lp=0.5)
    df = df[df["method"] != "grand"]  # GraNd not among pruning.methods
    rows = _settled(pruning_claims("m", df, None, {"C3b": {"keep": 0.5}}))
    prim = next(r for r in rows if r.claim == "C3b" and r.role == "primary")
    assert prim.verdict == "not measured" and "4 tests" in prim.test
    # a declared primary that was not run: the headline says so, never a secondary row's verdict
    rows = _settled(pruning_claims("m", _pruning_table(lp=0.5), None, {"C3a": {"keep": 0.7}}))
    (head,) = [h for h in headlines(rows) if h["claim"] == "C3a"]
    assert head["verdict"] == "not measured: the declared primary was not run"


def test_provisional_says_more_than_too_few_events():
    rows = _settled(forgetting_claims("m", {"plain": _forgetting_runs(3, 0.5, 0.3, events=12)}, None))
    assert next(r for r in rows if r.role == "primary").verdict == "provisional"  # n = 3 < min_n
