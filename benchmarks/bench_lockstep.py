"""Many small training runs one at a time vs in lockstep (lpntk.lockstep), side by side, with the ratio.

The learning-difficulty experiments train many tiny models: use case 1 trains R runs on each company set
(:func:`lpntk.difficulty.target_l2_curves`), the size experiment one run per quad-tree node
(:func:`lpntk.difficulty.learning_difficulty`). Each is timed run by run (the baseline, ``lockstep=False`` / one
split at a time) and in lockstep (stacked parameters under ``torch.func.vmap``), on the same data, model and recipe
as the default config (digits, small_cnn, the exp7.2 / exp7.1 recipes), and the largest difference between the two
results is printed beside the times (no dropout: they agree up to float32 summation order). Usage::

    python benchmarks/bench_lockstep.py                    # digits, default config sizes, 1 thread
    python benchmarks/bench_lockstep.py --model mnist_cnn --shape 1,28,28 --runs 16 --nodes 16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lpntk.data import Split
from lpntk.difficulty import learning_difficulty, target_l2_curves
from lpntk.models import build_model
from lpntk.train import Recipe


def _data(shape: tuple[int, ...], n: int, seed: int = 0) -> Split:
    """Digits (8x8) from scikit-learn when the shape is theirs, else random images of ``shape``; 10 classes."""
    if shape == (1, 8, 8):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy((d.images[:n] * 255 / 16).astype(np.uint8))[:, None]
        y = torch.from_numpy(d.target[:n].astype(np.int64))
    else:
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
        y = torch.arange(n) % 10
    return Split(x, y, torch.arange(n))


def _time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--shape", default="1,8,8", help="input shape C,H,W (1,8,8: scikit-learn digits)")
    ap.add_argument("--runs", type=int, default=6, help="runs per company set (difficulty.runs)")
    ap.add_argument("--set-size", type=int, default=110, help="samples per company set (10 classes x (1 + num))")
    ap.add_argument("--epochs", type=int, default=50, help="difficulty.epochs")
    ap.add_argument("--nodes", type=int, default=64, help="quad-tree nodes of one size (64: size 1 of pool 64)")
    ap.add_argument("--node-size", type=int, default=10, help="samples per node (10: one per class)")
    ap.add_argument("--size-epochs", type=int, default=30, help="difficulty.size.epochs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="best of this many timings")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    make = lambda: build_model(args.model, shape, 10)  # noqa: E731
    mean, std = [0.5] * shape[0], [0.25] * shape[0]
    data = _data(shape, max(args.set_size, args.nodes * args.node_size))
    print(f"{args.model} {args.shape}, {args.threads} thread(s), torch {torch.__version__}, best of {args.repeat}")

    # use case 1: R runs on one company set (exp7.2: SGD 0.01, momentum 0.9, wd 5e-4, one full batch per epoch)
    recipe = Recipe(
        epochs=args.epochs, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="none", shuffle=False,
        select="last",
    )  # fmt: skip
    train, targets, seeds = data.subset(range(args.set_size)), np.arange(0, args.set_size, 11), range(1, args.runs + 1)
    rows = []
    for lockstep in (False, True):
        t, out = _time(
            lambda lockstep=lockstep: target_l2_curves(
                make, train, targets, recipe, seeds, mean=mean, std=std, lockstep=lockstep
            ),
            args.repeat,
        )
        rows.append((t, out["train"]))
    diff = float(np.abs(rows[0][1] - rows[1][1]).max())
    print(
        f"difficulty: {args.runs} runs x {args.epochs} epochs on {args.set_size} samples: one at a time "
        f"{rows[0][0]:.2f} s, lockstep {rows[1][0]:.2f} s, ratio {rows[0][0] / rows[1][0]:.1f}x "
        f"(max |diff| of the L2 curves {diff:.1e})"
    )

    # size experiment: one run per node from the same seed (exp7.1: SGD 0.1, StepLR(2, 0.7), batch 128, shuffled)
    recipe = Recipe(
        epochs=args.size_epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
        step_size=2, gamma=0.7, shuffle=True, select="last",
    )  # fmt: skip
    nodes = [data.subset(range(k * args.node_size, (k + 1) * args.node_size)) for k in range(args.nodes)]
    t_sep, sep = _time(
        lambda: np.stack([learning_difficulty(make, s, recipe, 1, mean=mean, std=std) for s in nodes]), args.repeat
    )
    t_lock, lock = _time(lambda: learning_difficulty(make, nodes, recipe, 1, mean=mean, std=std), args.repeat)
    print(
        f"ld_size: {args.nodes} nodes of {args.node_size} samples x {args.size_epochs} epochs: one at a time "
        f"{t_sep:.2f} s, lockstep {t_lock:.2f} s, ratio {t_sep / t_lock:.1f}x "
        f"(max relative |diff| of LD {float(np.abs(sep - lock).max() / np.abs(sep).max()):.1e})"
    )


if __name__ == "__main__":
    main()
