"""Killed difficulty and ld_size jobs resume where they stopped (run by run and in lockstep) and write the bytes of an
uninterrupted job; the lockstep stages equal the run-by-run stages."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from difficulty_setup import OFF, _assert_same_bytes, _count_and_kill, _dcfg, _outputs, small_trained_setup

import lpntk.lockstep
import lpntk.train


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    """Prepared digits (20 per class), a briefly trained small CNN as reference, its per-class kernel files."""
    return small_trained_setup(tmp_path_factory)


def _record_resume_starts(monkeypatch, module) -> list:
    """Patch ``module.load_resume_state`` to record the epoch of every state it loads (None: none loaded)."""
    starts, real = [], module.load_resume_state
    monkeypatch.setattr(
        module, "load_resume_state", lambda *a: (lambda st: (starts.append(st and st["epoch"]), st)[1])(real(*a))
    )
    return starts


def test_killed_difficulty_job_resumes_where_it_stopped(small_setup, tmp_path, monkeypatch):
    """A difficulty job killed after its first run and rerun trains only the runs that are missing and writes the
    same bytes as a job that was never interrupted; a record of another config is not reused; the progress folder
    goes when the job completes."""
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, _, cfg, kernels = small_setup
    cfg = {**cfg, "difficulty": _dcfg(control=False, contradictory="none")}
    args = {"dataset": "digits", "kernels": kernels, "data": root / "data", "reference": root / "model.pt",
            "threads": 1, "mlflow_cfg": OFF}  # fmt: skip
    clean = _outputs(tmp_path / "clean", DIFFICULTY_OUTPUTS)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg=cfg, outputs=clean)
    total = len(calls)  # 3 sets x 2 runs
    assert total == 6

    out = _outputs(tmp_path / "run", DIFFICULTY_OUTPUTS)
    calls = _count_and_kill(monkeypatch, kill_call=2)
    with pytest.raises(KeyboardInterrupt):
        difficulty_stage(**args, cfg=cfg, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert len(list(progress.glob("*.npz"))) == 1 and not os.path.exists(out["summary"])
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg=cfg, outputs=out)
    assert len(calls) == total - 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()

    # killed again, then rerun with more epochs: the record of the 3-epoch run is not reused
    calls = _count_and_kill(monkeypatch, kill_call=2)
    with pytest.raises(KeyboardInterrupt):
        difficulty_stage(**args, cfg=cfg, outputs=out)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg={**cfg, "difficulty": {**cfg["difficulty"], "epochs": 4}}, outputs=out)
    assert len(calls) == total


def test_killed_ld_size_job_resumes_inside_its_run(small_setup, tmp_path, monkeypatch):
    """An ld_size job killed in its second run (after that run saved its state at epoch 1) and rerun loads the first
    run's record, continues the second from its saved epoch, and writes the same bytes as an uninterrupted job."""
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, _ = small_setup
    dcfg = _dcfg()
    dcfg["size"] = {**dcfg["size"], "resume_every": 1}
    cfg = {**cfg, "difficulty": dcfg}
    args = {"dataset": "digits", "cfg": cfg, "data": root / "data", "threads": 1, "mlflow_cfg": OFF}
    clean = _outputs(tmp_path / "clean", LD_SIZE_OUTPUTS)
    calls = _count_and_kill(monkeypatch, None)
    ld_size_stage(**args, outputs=clean)
    assert len(calls) == 5  # sizes 4 and 1 per class: 1 + 4 runs

    out = _outputs(tmp_path / "run", LD_SIZE_OUTPUTS)
    _count_and_kill(monkeypatch, kill_call=2, kill_epoch=2)  # of 2 epochs: killed before the run returns
    with pytest.raises(KeyboardInterrupt):
        ld_size_stage(**args, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert sorted(p.name for p in progress.iterdir()) == ["size1-node0.resume.pt", "size4-node0.npz"]
    starts = _record_resume_starts(monkeypatch, lpntk.train)
    calls = _count_and_kill(monkeypatch, None)
    ld_size_stage(**args, outputs=out)
    assert len(calls) == 4 and starts[0] == 1  # the second run continued from epoch 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()


def _count_and_kill_lockstep(monkeypatch, kill_call: int | None, kill_epoch: int | None = None):
    """As :func:`_count_and_kill` for the lockstep path: record each lockstep call's seeds; the ``kill_call``-th
    call raises KeyboardInterrupt after epoch ``kill_epoch``."""
    import lpntk.difficulty as difficulty_module

    real, calls = difficulty_module.train_lockstep, []

    def patched(make_model, train, recipe, seeds, **kw):
        calls.append(list(seeds))
        if kill_call is not None and len(calls) == kill_call:

            def on_epoch(seed, row):
                if row["epoch"] == kill_epoch:
                    raise KeyboardInterrupt("killed")

            return real(make_model, train, recipe, seeds, on_epoch=on_epoch, **kw)
        return real(make_model, train, recipe, seeds, **kw)

    monkeypatch.setattr(difficulty_module, "train_lockstep", patched)
    return calls


def test_lockstep_difficulty_and_ld_size_stages_equal_the_run_by_run_stages(small_setup, tmp_path, monkeypatch):
    """difficulty.lockstep: every company set's seeds train together and every size's quad-tree nodes together
    (at most lockstep_max_runs at a time); the small CNN has no dropout, so every area and LD equals the run-by-run
    stage's up to float32 summation order."""
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, kernels = small_setup
    args = {"dataset": "digits", "data": root / "data", "threads": 1, "mlflow_cfg": OFF}
    d_args = {**args, "kernels": kernels, "reference": root / "model.pt"}
    sep_cfg = {**cfg, "difficulty": _dcfg(control=True)}
    lock_cfg = {**cfg, "difficulty": _dcfg(control=True, lockstep=True)}
    sep = difficulty_stage(**d_args, cfg=sep_cfg, outputs=_outputs(tmp_path / "sep", DIFFICULTY_OUTPUTS))
    calls = _count_and_kill_lockstep(monkeypatch, None)
    lock = difficulty_stage(**d_args, cfg=lock_cfg, outputs=_outputs(tmp_path / "lock", DIFFICULTY_OUTPUTS))
    assert calls and all(c == [1, 2] for c in calls)  # each set's two runs in one call
    assert lock["lockstep"] and not sep["lockstep"] and lock["auc_per_run"].keys() == sep["auc_per_run"].keys()
    for arm, areas in sep["auc_per_run"].items():
        np.testing.assert_allclose(lock["auc_per_run"][arm], areas, rtol=1e-4, err_msg=arm)

    ld = {}
    for name, lockstep, max_runs in (("sep", False, 64), ("lock", True, 64), ("chunked", True, 3)):
        c = {**cfg, "difficulty": _dcfg(lockstep=lockstep, lockstep_max_runs=max_runs)}
        calls = _count_and_kill_lockstep(monkeypatch, None)
        out = _outputs(tmp_path / f"ld-{name}", LD_SIZE_OUTPUTS)
        ld_size_stage(**args, cfg=c, outputs=out)
        ld[name] = pd.read_csv(out["ld"])
        # sizes 4 and 1 per class: 1 + 4 runs; in lockstep 1 call, then 4 (or 3 + 1) nodes
        assert [len(x) for x in calls] == {"sep": [], "lock": [1, 4], "chunked": [1, 3, 1]}[name]
    for name in ("lock", "chunked"):
        np.testing.assert_array_equal(ld[name]["position"], ld["sep"]["position"])
        for col in ("ld_size4", "ld_size1"):
            np.testing.assert_allclose(ld[name][col], ld["sep"][col], rtol=1e-4, err_msg=f"{name} {col}")


def test_killed_lockstep_ld_size_job_resumes_inside_its_group(small_setup, tmp_path, monkeypatch):
    """An ld_size job in lockstep killed inside its second group (4 nodes, saved at epoch 1) and rerun loads the
    first group's record, continues the second from its saved epoch and writes the same bytes as an uninterrupted
    job."""
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, _ = small_setup
    dcfg = _dcfg(lockstep=True)
    dcfg["size"] = {**dcfg["size"], "resume_every": 1}
    args = {"dataset": "digits", "cfg": {**cfg, "difficulty": dcfg}, "data": root / "data", "threads": 1,
            "mlflow_cfg": OFF}  # fmt: skip
    clean = _outputs(tmp_path / "clean", LD_SIZE_OUTPUTS)
    ld_size_stage(**args, outputs=clean)
    out = _outputs(tmp_path / "run", LD_SIZE_OUTPUTS)
    _count_and_kill_lockstep(monkeypatch, kill_call=2, kill_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        ld_size_stage(**args, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert sorted(p.name for p in progress.iterdir()) == ["size1-nodes0-3.resume.pt", "size4-node0.npz"]
    starts = _record_resume_starts(monkeypatch, lpntk.lockstep)
    calls = _count_and_kill_lockstep(monkeypatch, None)
    ld_size_stage(**args, outputs=out)
    assert calls == [[1, 1, 1, 1]] and starts == [1]  # the 4-node group continued from epoch 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()
