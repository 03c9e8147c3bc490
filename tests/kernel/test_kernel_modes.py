"""How a Gram is computed: one options dataclass (lpntk.KernelOptions) for every public kernel, one table of
approximations by kernel.mode (lpntk.kernel.MODES), and the kernel stage in sketch mode on the tiny test config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from torch import nn

from lpntk.kernel import MODES, KernelOptions, entk_blocks, gradient_gram, lpntk_gram, pntk_gram, register_mode


def _linear():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    return nn.Linear(4, 3).double(), x, torch.tensor([0, 1, 2, 2, 1, 0])


def test_options_as_one_dataclass_or_as_keywords():
    model, x, y = _linear()
    v = torch.randn(6, 3, dtype=torch.float64)
    opts = KernelOptions(mode="sketch", sketch_dim=7, seed=3, block_size=2)
    calls = {
        "lpntk": lambda **kw: lpntk_gram(model, x, y, **kw),
        "pntk": lambda **kw: pntk_gram(model, x, **kw),
        "gradient": lambda **kw: gradient_gram(model, x, v, **kw),
        "entk": lambda **kw: entk_blocks(model, x, **kw),
    }
    for name, call in calls.items():
        by_keywords = call(mode="sketch", sketch_dim=7, seed=3, block_size=2)
        assert torch.equal(call(options=opts), by_keywords), name
        assert torch.equal(call(options=opts, seed=4), call(mode="sketch", sketch_dim=7, seed=4)), name  # override
        assert torch.equal(call(), call(options=KernelOptions())), name  # the defaults: exact
        with pytest.raises(TypeError, match="'blocksize'"):
            call(blocksize=2)
    assert KernelOptions().mode == "exact" and dataclasses.replace(opts, mode="exact").sketch_dim == 7
    with pytest.raises(ValueError, match="^mode: expected one of 'exact', 'sketch'"):
        KernelOptions(mode="approx")


def test_the_modes_are_the_schemas(schema_path):
    from lpntk.config import load_schema

    assert load_schema(schema_path)["$defs"]["kernel"]["properties"]["mode"]["enum"] == list(MODES)


def test_a_registered_mode_is_dispatched_and_accepted_by_the_config(tmp_path, repo, schema_path):
    from lpntk import plugins
    from lpntk.config import dataset_config, load_config
    from lpntk.kernel._gram import Approximation, Packed

    @register_mode("zeros")
    class Zeros(Approximation):  # every per-sample vector 0 in one dimension: a Gram of zeros
        def __init__(self, eng, first, pairs, m, opts, dtype, device):
            self.m, self.dtype, self.bytes_per_sample = m, dtype, 8 * m

        def alloc(self, n):
            return Packed(torch.zeros((n, self.m, 1), dtype=self.dtype), [], [], [])

        def fill(self, pack, rows, factors):
            pass

    try:
        model, x, y = _linear()
        assert torch.equal(lpntk_gram(model, x, y, mode="zeros"), torch.zeros(6, 6, dtype=torch.float64))
        raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
        raw["datasets"]["tiny"]["kernel"]["mode"] = "zeros"
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
        assert dataset_config(load_config(tmp_path / "c.yaml", schema_path), "tiny")["kernel"]["mode"] == "zeros"
    finally:
        del MODES["zeros"]
        plugins._CHOICES[("kernel", "mode")].remove("zeros")


@pytest.mark.slow
def test_the_kernel_stage_in_sketch_mode(tmp_path, repo, schema_path):
    """kernel.mode: sketch through the kernel stage on the tiny test config: every entry within the CountSketch's
    documented spread, sqrt(2/D) |phi| |phi'| (here within 6 of them), of the exact stage's, and not equal to it."""
    from conftest import assert_sketch_of, small_kernel_setup

    from lpntk.config import dataset_config, load_config
    from lpntk.grams import iter_class_grams
    from lpntk.stages.kernel_stage import kernel_stage

    prep, _, cfg, exact_files = small_kernel_setup(tmp_path)
    raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    dim = 4096
    raw["datasets"]["tiny"]["kernel"].update({"mode": "sketch", "sketch_dim": dim, "sketch_seed": 1})
    (tmp_path / "sketch.yaml").write_text(yaml.safe_dump(raw))
    kcfg = dataset_config(load_config(tmp_path / "sketch.yaml", schema_path), "tiny")["kernel"]
    assert kcfg["mode"] == "sketch"
    cfg = {**cfg, "kernel": {**cfg["kernel"], **{k: kcfg[k] for k in ("mode", "sketch_dim", "sketch_seed")}}}
    out = tmp_path / "sketch" / "classes0-3.npz"
    kernel_stage(
        dataset="digits",
        cfg=cfg,
        classes=[0, 1, 2, 3],
        data=tmp_path / "data",
        reference=tmp_path / "model.pt",
        output=out,
        threads=1,
        mlflow_cfg={"enabled": False},
    )
    assert_sketch_of(list(iter_class_grams([out])), list(iter_class_grams([exact_files[0]])), dim)
