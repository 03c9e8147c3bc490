"""Arithmetic of a training run: exact float32 by default, TF32 or bfloat16 autocast on request.

``Recipe.precision`` (the config's ``train.precision``):

* ``fp32`` (default) -- exact float32. On CUDA, TF32 is switched off for matmuls and cuDNN convolutions for the
  duration of the run (PyTorch lets cuDNN use TF32 by default, which rounds the inputs of every convolution
  product to a 10-bit mantissa).
* ``tf32`` -- CUDA matmuls and convolutions may use TF32 tensor cores (inputs rounded to 10-bit mantissas,
  float32 accumulation) in the whole run, training and evaluation passes. On CPU it is the same as ``fp32``.
* ``bf16`` -- the training forward pass and its loss run under ``torch.autocast(dtype=torch.bfloat16)`` (8-bit
  mantissas in the autocast-eligible operations: linear layers and convolutions); weights, gradients, optimizer
  state and the evaluation passes stay float32, TF32 stays off.

Only ``fp32`` is the paper's arithmetic; the others trade accuracy for speed on a GPU, are recorded with each run
(the MLflow tag ``lpntk.precision``), and their effect on accuracy is measured by ``benchmarks/bench_gpu.py``.
Every kernel (lpNTK, eNTK, pNTK, GraNd) is computed in exact arithmetic whatever the training precision
(:func:`lpntk.kernel.exact_matmul`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .kernel import exact_matmul

__all__ = ["PRECISIONS", "run_precision", "forward_precision"]

#: The choices of ``Recipe.precision``.
PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def run_precision(precision: str) -> Iterator[None]:
    """The CUDA matmul and cuDNN TF32 switches for a whole run: on for ``tf32``, off otherwise (exact float32);
    the previous settings are restored on exit. No effect on CPU computation."""
    if precision != "tf32":
        with exact_matmul():
            yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def forward_precision(precision: str, device: torch.device):
    """The context of a training forward pass and loss: bfloat16 autocast on ``device`` for ``bf16``, else none."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
