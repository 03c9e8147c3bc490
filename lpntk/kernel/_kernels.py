"""The public kernels: Grams of per-sample vectors g_i = J(x_i)^T v_i for label-given cotangents v_i.

Notation (paper-protocols §1.2-1.3): logits z(x) in R^K, J(x) = dz/dw over the trainable parameters, eval mode;
s(y) in {+1,-1}^K is +1 at the label y and -1 elsewhere (:func:`sign_vectors`).

* :func:`gradient_gram`  G_ij = <g_i, g'_j> = v_i^T J(x_i) J(x'_j)^T v'_j for given cotangents v_i in R^K;
* :func:`lpntk_gram`     kappa_ij = (1/K) s(y_i)^T J(x_i) J(x'_j)^T s(y'_j) = <phi_i, phi'_j>, the Gram of
                         phi(x, y) = (1/sqrt K) J(x)^T s(y) = (1/sqrt K) grad_w (s(y) . z(x)), i.e. v = s(y)/sqrt K
                         (the official code drops the 1/K: multiply by K for its values; rankings are unchanged);
* :func:`pntk_gram`      (1/K) 1^T J(x_i) J(x'_j)^T 1, i.e. v = 1/sqrt K;
* :func:`entk_blocks`    the K x K blocks J(x_i) J(x'_j)^T, i.e. v = e_a for a = 1..K (m = K directions);
                         lpNTK = (1/K) s^T B s and pNTK = (1/K) 1^T B 1 for each block B;
* :func:`per_sample_gradients`, :func:`lpntk_features`  the vectors g_i, phi_i themselves, (N, P) (small models);
* :func:`per_sample_grad_norms`  GraNd ||J(x_i)^T (softmax(z_i) - e_{y_i})||, the diagonal of the
                         cross-entropy gradient Gram (per layer ||a||^2 ||delta||^2 or the cheaper ghost norm).

Each validates its arguments, runs in eval mode with TF32 off (:func:`~lpntk.kernel._engine.eval_mode`) and hands
the cotangents to the Gram driver (:func:`~lpntk.kernel._gram.gram`). How a Gram is computed -- exactly or by a
sketch (:data:`~lpntk.kernel._gram.MODES`), in blocks of how many samples, within what memory, in which dtype and on
which device -- is one :class:`KernelOptions`, given as ``options=`` or as keywords (``mode="sketch"``, ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._engine import (
    DEFAULT_BLOCK_SIZE,
    Cotangent,
    Engine,
    as_inputs,
    as_labels,
    eval_mode,
    iter_blocks,
    model_dtype_device,
    output_width,
    prepare_model,
)
from ._gram import KernelOptions, Side, gram

__all__ = [
    "KernelOptions",
    "sign_vectors",
    "gradient_gram",
    "lpntk_gram",
    "pntk_gram",
    "entk_blocks",
    "per_sample_gradients",
    "lpntk_features",
    "per_sample_grad_norms",
]


def sign_vectors(y: Tensor, num_classes: int) -> Tensor:
    """s(y) in {+1,-1}^K per label: +1 at the label, -1 elsewhere (paper-protocols §1.2). (N, K)."""
    y = torch.as_tensor(y).long()
    s = -torch.ones(len(y), num_classes)
    s[torch.arange(len(y)), y] = 1.0
    return s


def _setup(model: nn.Module, x, x2, num_classes: int | None, opts: KernelOptions):
    model, dtype, device = prepare_model(model, opts.dtype, opts.device, x)
    x = as_inputs(x, "x", dtype, device)
    x2 = None if x2 is None else as_inputs(x2, "x2", dtype, device)
    with eval_mode(model):
        k = output_width(model, x, num_classes)
    return model, dtype, device, x, x2, k


def _const_cot(v: Tensor) -> Cotangent:
    """Cotangents given up front: v (N, m, K)."""
    return lambda z, idx: v[idx]


def _gram(model: nn.Module, left: Side, right: Side | None, opts: KernelOptions) -> Tensor:
    with eval_mode(model):
        return gram(model, left, right, opts)


def gradient_gram(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    x2: Tensor | None = None,
    v2: Tensor | None = None,
    *,
    options: KernelOptions | None = None,
    **overrides,
) -> Tensor:
    """Gram of per-sample vectors g_i = J(x_i)^T v_i:  G_ij = <g_i, g'_j> = v_i^T J(x_i) J(x'_j)^T v'_j.

    ``v``: (N, K) per-sample cotangents (v = s(y)/sqrt K gives lpNTK, v = softmax(z) - e_y the per-sample
    cross-entropy gradient). With ``x2``/``v2`` the (N, M) cross Gram, else the symmetric (N, N) Gram
    (only one triangle is computed). How it is computed: ``options`` (:class:`KernelOptions`), or its fields as
    keywords -- ``mode`` (``"exact"``, or ``"sketch"``: g replaced by a seeded CountSketch to ``sketch_dim`` dims,
    unbiased; see :func:`lpntk_gram`), ``block_size`` samples per forward/backward pass, ``max_memory_bytes`` on the
    packed per-layer factors held at once (the output and one block's activations come on top), computation and
    accumulation in the model's dtype or in ``dtype`` (a cast copy of the model), on ``device`` if given, else the
    model's.
    """
    opts = KernelOptions.of(options, overrides)
    if (x2 is None) != (v2 is None):
        raise ValueError("x2, v2: give both or neither")
    model, dtype, device, x, x2, k = _setup(model, x, x2, None, opts)

    def as_cot(vv, name, n):
        vv = torch.as_tensor(vv).to(device=device, dtype=dtype)
        if vv.dim() != 2 or vv.shape != (n, k):
            raise ValueError(f"{name}: expected shape ({n}, {k}) = (len(x), K), got {tuple(vv.shape)}")
        return _const_cot(vv.unsqueeze(1))

    left = Side(x, as_cot(v, "v", len(x)))
    right = None if x2 is None else Side(x2, as_cot(v2, "v2", len(x2)))
    return _gram(model, left, right, opts)[:, 0, :, 0]


def _lpntk_vec(y: Tensor, k: int) -> Tensor:
    return sign_vectors(y.cpu(), k).double() / math.sqrt(k)


def lpntk_gram(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int | None = None,
    x2: Tensor | None = None,
    y2: Tensor | None = None,
    *,
    options: KernelOptions | None = None,
    **overrides,
) -> Tensor:
    """lpNTK Gram: kappa_ij = (1/K) s(y_i)^T J(x_i) J(x'_j)^T s(y'_j) = <phi_i, phi'_j>, phi = J^T s(y)/sqrt K.

    (N, N) symmetric (one triangle computed, then mirrored), or (N, M) against ``x2``/``y2``. The official code
    omits the 1/K: multiply by K for its values. ``num_classes`` is checked against the model's output width.

    ``mode="exact"`` (default): exact up to float round-off, from per-layer factors (module docstring).
    ``mode="sketch"``: phi is replaced by a seeded CountSketch S phi in R^D, D = ``sketch_dim`` (hash and sign per
    parameter coordinate, drawn from ``seed``); each entry is unbiased, E[<S phi, S phi'>] = kappa, with variance
    at most (||phi||^2 ||phi'||^2 + kappa^2) / D, i.e. a standard deviation <= sqrt(2/D) ||phi|| ||phi'||.
    The other options (``options`` or keywords) as in :func:`gradient_gram`.
    """
    opts = KernelOptions.of(options, overrides)
    if (x2 is None) != (y2 is None):
        raise ValueError("x2, y2: give both or neither")
    model, dtype, device, x, x2, k = _setup(model, x, x2, num_classes, opts)

    def side(xx, yy, name):
        yy = as_labels(yy, name, len(xx), k, device)
        return Side(xx, _const_cot(_lpntk_vec(yy, k).to(device=device, dtype=dtype).unsqueeze(1)))

    left = side(x, y, "y")
    right = None if x2 is None else side(x2, y2, "y2")
    return _gram(model, left, right, opts)[:, 0, :, 0]


def pntk_gram(
    model: nn.Module, x: Tensor, x2: Tensor | None = None, *, options: KernelOptions | None = None, **overrides
) -> Tensor:
    """pNTK Gram (Mohamadi et al. 2023): (1/K) 1^T J(x_i) J(x'_j)^T 1, i.e. the Gram of J^T 1 / sqrt K.

    (N, N) or (N, M) against ``x2``; options as in :func:`lpntk_gram`.
    """
    opts = KernelOptions.of(options, overrides)
    model, dtype, device, x, x2, k = _setup(model, x, x2, None, opts)
    ones = lambda n: torch.full((n, 1, k), 1.0 / math.sqrt(k), dtype=dtype, device=device)
    left = Side(x, _const_cot(ones(len(x))))
    right = None if x2 is None else Side(x2, _const_cot(ones(len(x2))))
    return _gram(model, left, right, opts)[:, 0, :, 0]


def entk_blocks(
    model: nn.Module, x1: Tensor, x2: Tensor | None = None, *, options: KernelOptions | None = None, **overrides
) -> Tensor:
    """eNTK blocks K(x1_i, x2_j) = J(x1_i) J(x2_j)^T, returned as (N1, N2, K, K) (x2 defaults to x1).

    Per sample, K backward passes (one per logit) give the layer factors with an extra K axis; the blocks are
    their contraction. lpNTK = (1/K) s^T B s and pNTK = (1/K) 1^T B 1 for each block B. Options as in
    :func:`lpntk_gram`.
    """
    opts = KernelOptions.of(options, overrides)
    model, dtype, device, x1, x2, k = _setup(model, x1, x2, None, opts)
    eye = torch.eye(k, dtype=dtype, device=device)
    cot = lambda z, idx: eye.expand(z.shape[0], k, k)
    left = Side(x1, cot)
    right = None if x2 is None else Side(x2, cot)
    return _gram(model, left, right, opts).permute(0, 2, 1, 3).contiguous()


def per_sample_gradients(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Materialised per-sample vectors g_i = J(x_i)^T v_i, (N, P), columns in ``named_parameters()`` order
    (trainable parameters only, each flattened). For small models; memory N * P."""
    opts = KernelOptions(block_size=block_size, max_memory_bytes=1, dtype=dtype, device=device)
    model, dtype, device, x, _, k = _setup(model, x, None, None, opts)
    v = torch.as_tensor(v).to(device=device, dtype=dtype)
    if v.shape != (len(x), k):
        raise ValueError(f"v: expected shape ({len(x)}, {k}) = (len(x), K), got {tuple(v.shape)}")
    return _materialise_all(model, x, _const_cot(v.unsqueeze(1)), block_size)


def _materialise_all(model: nn.Module, x: Tensor, cot: Cotangent, block_size: int) -> Tensor:
    dtype, device = model_dtype_device(model)
    with eval_mode(model):
        eng = Engine(model)
        offsets, off = {}, 0
        for _, p in eng.params:
            offsets[id(p)] = off
            off += p.numel()
        out = torch.zeros((len(x), off), dtype=dtype, device=device)
        with eng:
            for sl in iter_blocks(0, len(x), block_size):
                fs, _ = eng.factors(x[sl], cot, sl)
                for f in fs:
                    g = f.materialise()[:, 0]
                    c = 0
                    for p in f.params:
                        out[sl, offsets[id(p)] : offsets[id(p)] + p.numel()] = g[:, c : c + p.numel()]
                        c += p.numel()
    return out


def lpntk_features(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """lpNTK feature vectors phi(x_i, y_i) = (1/sqrt K) J(x_i)^T s(y_i) = (1/sqrt K) grad_w (s(y_i) . z(x_i)).

    (N, P), columns in ``named_parameters()`` order; lpntk_gram = Phi Phi^T. Memory N * P: small models only.
    """
    opts = KernelOptions(block_size=block_size, max_memory_bytes=1, dtype=dtype, device=device)
    model, dtype, device, x, _, k = _setup(model, x, None, num_classes, opts)
    y = as_labels(y, "y", len(x), k, device)
    v = _lpntk_vec(y, k).to(device=device, dtype=dtype)
    return _materialise_all(model, x, _const_cot(v.unsqueeze(1)), block_size)


def _ce_cot(y: Tensor, k: int) -> Cotangent:
    def cot(z: Tensor, idx: slice) -> Tensor:
        g = torch.softmax(z, dim=1)
        g[torch.arange(len(z), device=z.device), y[idx]] -= 1.0
        return g.unsqueeze(1)

    return cot


def per_sample_grad_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: str = "cross_entropy",
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """GraNd (Paul et al. 2021): ||grad_w CE(f(x_i), y_i)||_2 = ||J(x_i)^T (softmax(z_i) - e_{y_i})||_2, (N,).

    Diagonal only, per layer and per block: ||a||^2 ||delta||^2 for Linear layers, the cheaper of the
    materialised gradient and the ghost norm sum_{t,t'} (a_t . a_t')(delta_t . delta_t') for convolutions.
    Eval mode (dropout off), like every kernel here.
    """
    if loss != "cross_entropy":
        raise ValueError(f"loss: only 'cross_entropy' is supported, got {loss!r}")
    KernelOptions(block_size=block_size)  # checks block_size
    model, dtype, device = prepare_model(model, dtype, device, x)
    x = as_inputs(x, "x", dtype, device)
    with eval_mode(model):
        k = output_width(model, x, None)
        y = as_labels(y, "y", len(x), k, device)
        eng = Engine(model)
        out = torch.zeros(len(x), dtype=dtype, device=device)
        cot = _ce_cot(y, k)
        with eng:
            for sl in iter_blocks(0, len(x), block_size):
                fs, _ = eng.factors(x[sl], cot, sl)
                out[sl] = sum(f.squared_norms()[:, 0] for f in fs)
    return out.sqrt()
