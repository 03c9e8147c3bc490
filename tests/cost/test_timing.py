"""Measured stage times from Snakemake benchmark files, beside the estimate: sums per rule by hand, the ratio and the
1.5x flag at its edges."""

from __future__ import annotations

import pytest

from lpntk.timing import comparison_markdown, estimate_vs_measured, measured_stage_seconds, startup_seconds_of_run

HEADER = "s\th:m:s\tmax_rss\n"


def test_sums_per_rule_and_ratio(tmp_path):
    bench = tmp_path / "d" / "benchmarks"
    (bench / "retrain").mkdir(parents=True)
    (bench / "train.tsv").write_text(HEADER + "10.5\t0:00:10\t1\n")
    (bench / "retrain" / "a.tsv").write_text(HEADER + "100\t0:01:40\t1\n")
    (bench / "retrain" / "b.tsv").write_text(HEADER + "50\t0:00:50\t1\n")
    measured = measured_stage_seconds(tmp_path, "d")
    assert measured == {"train": (1, 10.5), "retrain": (2, 150.0)}
    est = {
        "stages": [
            {"stage": "train", "jobs": 1, "cpu_hours": 10.5 * 1.5 / 3600},  # measured / estimated = 1 / 1.5: within
            {"stage": "retrain", "jobs": 2, "cpu_hours": 99.0 / 3600},  # 150 / 99 = 1.52: outside
            {"stage": "kernel", "jobs": 1, "cpu_hours": 0.01},  # not run
        ]
    }
    rows = {r["stage"]: r for r in estimate_vs_measured(est, measured)}
    assert rows["train"]["ratio"] == pytest.approx(1 / 1.5) and rows["train"]["within"]
    assert rows["retrain"]["ratio"] == pytest.approx(150 / 99) and not rows["retrain"]["within"]
    assert rows["kernel"]["jobs_run"] == 0 and rows["kernel"]["ratio"] == 0.0
    md = comparison_markdown(list(rows.values()))
    assert "| retrain | 2 / 2 | 99 | 150 | 150 | 1.52 (outside 1.5x and 5 s) |" in md
    # an earlier estimate beside
    old = {"stages": [{"stage": "retrain", "jobs": 2, "cpu_hours": 50.0 / 3600}]}
    md = comparison_markdown(estimate_vs_measured(est, measured, before=old))
    assert "| retrain | 2 / 2 | 50 | 99 | 150 | 150 | 1.52 (outside 1.5x and 5 s) |" in md
    assert "| train | 1 / 1 | - | 16 |" in md
    assert startup_seconds_of_run(measured, {"train": 2.0, "*": 0.5}) == 2.0 + 2 * 0.5
    # a stage of a few seconds: within floor_s of its estimate counts as within whatever its ratio
    tiny = {"stages": [{"stage": "train", "jobs": 1, "cpu_hours": 2.0 / 3600}]}
    assert estimate_vs_measured(tiny, {"train": (1, 6.9)})[0]["within"]  # 3.45x, 4.9 s off
    assert not estimate_vs_measured(tiny, {"train": (1, 7.1)})[0]["within"]  # 5.1 s off
    assert not estimate_vs_measured(tiny, {"train": (1, 6.9)}, floor_s=0.0)[0]["within"]
    halves = {r["stage"]: r for r in estimate_vs_measured(est, measured, share=0.5)}
    assert halves["retrain"]["ratio"] == pytest.approx(75 / 99) and halves["retrain"]["within"]
