"""What the cost tests share: per-unit figures of one of each unit (so that seconds = the work's own counts) and
jobs grouped by stage."""

from __future__ import annotations

FIGURES = {  # one of each unit, so that seconds = the work's own counts
    "train_sample_s": 1.0, "train_step_s": 10.0, "eval_sample_s": 0.1, "eval_batch_s": 2.0, "grand_sample_s": 3.0,
    "kernel_sample_s": 5.0, "kernel_pair_flops": 1e9, "gemm_gflops": 4.0, "kernel_bytes_per_sample": 1000,
    "predict_step_s": 7.0, "predict_sample_s": 0.5, "run_epoch_s": 0.25, "fpc_element_s": 1e-3,
    "relation_pair_s": 1e-2, "gram_write_byte_s": 1e-6, "gram_read_byte_s": 1e-7, "figure_s": 0.75,
}  # fmt: skip
#: The figures a model's measurement writes (the rest are the host's: lpntk.cost.HOST_FIGURES)
MODEL_FIGURES = set(FIGURES) - {"fpc_element_s", "relation_pair_s", "gram_write_byte_s", "gram_read_byte_s", "figure_s"}


def by_stage(jobs):
    """{stage: [jobs]} in plan order."""
    out = {}
    for j in jobs:
        out.setdefault(j.stage, []).append(j)
    return out
