"""First-order predictors of the logit change of one SGD step (paper Eq. 1, logit form).

For a plain SGD step w_t = w_{t-1} - eta grad_w L_B on the batch B, L_B = mean_{u in B} CE(z(x_u), y_u),

    Delta z(x_o) ~ -eta J(x_o) grad_w L_B = -eta mean_u K(x_o, x_u) grad_z L(x_u),

with K(x_o, x_u) = J(x_o) J(x_u)^T the K x K eNTK block and grad_z L(x_u) = softmax(z_u) - e_{y_u}. ``entk``: one
Jacobian-vector product of the batch gradient (no block formed). ``lpntk``: each block replaced by kappa I_K,
kappa = (1/K) s(y_o)^T K(x_o, x_u) s(y_u); ``pntk``: likewise with (1/K) 1^T K(x_o, x_u) 1; both need only the
N_o x N_u Gram. ``lpntk_raw``, ``pntk_raw``: the official code's kernels without the 1/K (K times larger changes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..kernel import cross_entropy_gradients, jvp_logits, lpntk_gram, pntk_gram

__all__ = ["KERNEL_PREDICTORS", "PREDICTORS", "predicted_logit_changes", "first_order_logit_change"]

#: Eq. 1 with the eNTK block, lpNTK kappa I_K, pNTK kappa I_K (the paper's comparison and its pNTK analogue), and
#: the last two with the official code's constant c = 1 instead of 1/K (K times larger kernels).
KERNEL_PREDICTORS = ("entk", "lpntk", "pntk", "lpntk_raw", "pntk_raw")
#: plus the linearisation along the actual parameter update.
PREDICTORS = KERNEL_PREDICTORS + ("entk_update",)


def predicted_logit_changes(
    model: nn.Module,
    x_obs: Tensor,
    y_obs: Tensor,
    x_upd: Tensor,
    y_upd: Tensor,
    lr: float,
    *,
    predictors: Sequence[str] = KERNEL_PREDICTORS,
    block_size: int = 256,
    gradient: tuple[Mapping[str, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """First-order logit changes of x_obs after one plain SGD step (``lr``) on the batch (x_upd, y_upd), (N_o, K) each.

    * ``entk``:  Delta z(x_o) = -lr J(x_o) grad_w L_batch = -lr mean_u K(x_o, x_u) grad_z L(x_u)  (one JVP,
      :func:`lpntk.kernel.jvp_logits`; no block is formed),
    * ``lpntk``: Delta z(x_o) = -lr mean_u kappa_lp(o, u) grad_z L(x_u), kappa_lp = (1/K) s(y_o)^T K(x_o,x_u) s(y_u)
      (the N_o x N_u Gram of :func:`lpntk.kernel.lpntk_gram`),
    * ``pntk``:  Delta z(x_o) = -lr mean_u kappa_p(o, u) grad_z L(x_u),  kappa_p = (1/K) 1^T K(x_o, x_u) 1
      (:func:`lpntk.kernel.pntk_gram`),
    * ``lpntk_raw``, ``pntk_raw``: the same with the official code's kernels s^T K s and 1^T K 1 (no 1/K), i.e.
      K times the changes above,

    all at the model's current parameters, in eval mode, L the mean cross-entropy over the batch. ``gradient``:
    (grad_w L_batch, grad_z L per sample) if already computed (:func:`lpntk.kernel.cross_entropy_gradients`).
    """
    unknown = [p for p in predictors if p not in KERNEL_PREDICTORS]
    if unknown:
        raise ValueError(f"predictors: unknown {unknown}; choose from {list(KERNEL_PREDICTORS)}")
    if gradient is None:
        g, err, _ = cross_entropy_gradients(model, x_upd, y_upd)
    else:
        g, err = gradient
    n_u = len(x_upd)
    out: dict[str, Tensor] = {}
    if "entk" in predictors:
        out["entk"] = -lr * jvp_logits(model, x_obs, g, block_size=block_size).detach()
    k = err.shape[1]
    for name, gram in (
        ("lpntk", lambda: lpntk_gram(model, x_obs, y_obs, x2=x_upd, y2=y_upd, block_size=block_size)),
        ("pntk", lambda: pntk_gram(model, x_obs, x_upd, block_size=block_size)),
    ):
        if name in predictors or f"{name}_raw" in predictors:
            kap = gram().detach()
            dz = -lr * (kap @ err.to(kap.dtype)) / n_u
            if name in predictors:
                out[name] = dz
            if f"{name}_raw" in predictors:
                out[f"{name}_raw"] = k * dz
    return {p: out[p] for p in predictors}


def first_order_logit_change(
    model: nn.Module,
    x_obs: Tensor,
    x_upd: Tensor,
    y_upd: Tensor,
    lr: float,
    *,
    kernel: str = "entk",
    y_obs: Tensor | None = None,
    block_size: int = 256,
) -> Tensor:
    """First-order change of the logits of x_obs after one SGD step (lr) on the batch (x_upd, y_upd), (N_o, K):

    * ``"entk"``:  Delta z(x_o) = -lr * mean_u K(x_o, x_u) dL/dz(x_u) = -lr * J(x_o) grad_w L_batch, matrix-free
      (paper-protocols §1.1, 4.3).
    * ``"lpntk"``: K replaced by kappa(o, u) I_K with kappa the lpNTK (1/K scale): -lr * mean_u kappa_ou dL/dz(x_u);
      needs ``y_obs``.
    * ``"pntk"``:  the same with the pNTK.

    One predictor of :func:`lpntk.forgetting.predicted_logit_changes`, which computes several from one pass.
    """
    if kernel not in ("entk", "lpntk", "pntk"):
        raise ValueError(f"kernel: expected 'entk', 'lpntk' or 'pntk', got {kernel!r}")
    if kernel == "lpntk" and y_obs is None:
        raise ValueError("y_obs: kernel='lpntk' needs the labels of x_obs")
    return predicted_logit_changes(model, x_obs, y_obs, x_upd, y_upd, lr, predictors=[kernel], block_size=block_size)[
        kernel
    ]
