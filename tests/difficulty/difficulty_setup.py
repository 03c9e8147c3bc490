"""What the difficulty stage tests share (tests/difficulty/): the small trained setup (computed once per session,
read only), the difficulty block they start from, output paths, and the patches that count and kill training runs."""

from __future__ import annotations

from conftest import small_kernel_setup

OFF = {"enabled": False}
_SETUP: dict = {}


def small_trained_setup(tmp_path_factory):
    """Prepared digits (20 per class), a briefly trained small CNN as reference, its per-class kernel files:
    (root, prepared, cfg, kernels). The tests read it and write their outputs elsewhere, so one copy serves them all."""
    if "setup" not in _SETUP:
        root = tmp_path_factory.mktemp("ld")
        prep, _, cfg, kernels = small_kernel_setup(root, train_epochs=5)
        _SETUP["setup"] = root, prep, cfg, kernels
    return _SETUP["setup"]


def _dcfg(**kw):
    d = {
        "enabled": True,
        "target": "max_self",
        "random_targets": 0,
        "target_seed": 0,
        "rank_by": ["lpntk"],
        "num": 3,
        "runs": 2,
        "seed_offset": 0,
        "epochs": 3,
        "batch_size": 128,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": {"name": "none", "step_size": 2, "gamma": 0.7, "t_max": None},
        "shuffle": False,
        "l2_pass": "train",
        "official_swap": False,
        "contradictory": "all",
        "control": False,
        "control_seed": 0,
        "lockstep": False,  # the run-by-run path, whose runs these tests count; lockstep: the tests at the end
        "lockstep_max_runs": 64,
        "size": {
            "enabled": True,
            "pool_per_class": 4,
            "min_size": 1,
            "partition_seed": 0,
            "seed": 1,
            "epochs": 2,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": {"name": "step", "step_size": 2, "gamma": 0.7, "t_max": None},
            "shuffle": True,
            "resume_every": 0,
        },
    }
    d.update(kw)
    return d


def _outputs(root, names):
    ext = {
        "curves": "npz",
        "auc_md": "md",
        "figure": "png",
        "figure_pdf": "pdf",
        "summary": "json",
        "correlation_md": "md",
        "heatmap": "png",
        "heatmap_pdf": "pdf",
    }
    return {k: str(root / f"{k}.{ext.get(k, 'csv')}") for k in names}


def _assert_same_bytes(out, clean):
    for name, path in out.items():
        assert open(path, "rb").read() == open(clean[name], "rb").read(), name


def _count_and_kill(monkeypatch, kill_call: int | None, kill_epoch: int | None = None):
    """Patch the training the difficulty runs use: record each run's seed and start epoch; the ``kill_call``-th run
    (1-based) raises KeyboardInterrupt (a kill) before it starts, or after epoch ``kill_epoch`` if given."""
    import lpntk.difficulty as difficulty_module

    real, calls = difficulty_module.train_model, []

    def patched(model, train, recipe, seed, **kw):
        calls.append(seed)
        if kill_call is not None and len(calls) == kill_call:
            if kill_epoch is None:
                raise KeyboardInterrupt("killed")
            inner = kw.pop("on_epoch", None)

            def on_epoch(row):
                if inner is not None:
                    inner(row)
                if row["epoch"] == kill_epoch:
                    raise KeyboardInterrupt("killed")

            return real(model, train, recipe, seed, on_epoch=on_epoch, **kw)
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(difficulty_module, "train_model", patched)
    return calls
