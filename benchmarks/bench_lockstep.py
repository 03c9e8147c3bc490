"""Many small training runs one at a time vs in lockstep (lpntk.lockstep), side by side, with the ratio.

The learning-difficulty experiments train many tiny models: use case 1 trains R runs on each company set
(:func:`lpntk.difficulty.target_l2_curves`), the size experiment one run per quad-tree node
(:func:`lpntk.difficulty.learning_difficulty`), and use case 3 retrains K seeds on their pruned subsets. Each is
timed run by run (the baseline) and in lockstep (stacked parameters under ``torch.func.vmap``), on data, model and
recipes as the default config's (digits, its model, the exp7.2 / exp7.1 recipes, the retraining recipe on per-seed
draws of one size), and the largest difference between the two results is printed beside the times (no dropout:
they agree up to float32 summation order, which 50 epochs of SGD amplify). Usage::

    python benchmarks/bench_lockstep.py --model mlp         # digits, the default config's sizes, 1 thread
    python benchmarks/bench_lockstep.py --model mnist_cnn --shape 1,28,28 --runs 16 --nodes 16 --subset 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lpntk.data import Split
from lpntk.difficulty import learning_difficulty, target_l2_curves
from lpntk.lockstep import train_lockstep
from lpntk.models import build_model
from lpntk.train import Recipe, seed_everything, train_model


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
    ap.add_argument("--model", default="mlp", help="mlp: the default config's model")
    ap.add_argument("--shape", default="1,8,8", help="input shape C,H,W (1,8,8: scikit-learn digits)")
    ap.add_argument("--runs", type=int, default=6, help="runs per company set (difficulty.runs)")
    ap.add_argument("--set-size", type=int, default=110, help="samples per company set (10 classes x (1 + num))")
    ap.add_argument("--epochs", type=int, default=50, help="difficulty.epochs")
    ap.add_argument("--nodes", type=int, default=64, help="quad-tree nodes of one size (64: size 1 of pool 64)")
    ap.add_argument("--node-size", type=int, default=10, help="samples per node (10: one per class)")
    ap.add_argument("--size-epochs", type=int, default=30, help="difficulty.size.epochs")
    ap.add_argument("--seeds", type=int, default=3, help="retraining seeds (pruning.retrain.seeds)")
    ap.add_argument("--subset", type=int, default=647, help="samples per retraining subset (keep 0.5 of digits)")
    ap.add_argument("--retrain-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="best of this many timings")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    make = lambda: build_model(args.model, shape, 10)  # noqa: E731
    mean, std = [0.5] * shape[0], [0.25] * shape[0]
    data = _data(shape, max(args.set_size, args.nodes * args.node_size, args.subset * 2 + 500))
    print(f"{args.model} {args.shape}, {args.threads} thread(s), torch {torch.__version__}, best of {args.repeat}")

    # use case 1: R runs on one company set (exp7.2: SGD 0.01, momentum 0.9, wd 5e-4, one full batch per epoch)
    recipe = Recipe(
        epochs=args.epochs, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="none", shuffle=False,
        select="last",
    )  # fmt: skip
    train, targets, seeds = data.subset(range(args.set_size)), np.arange(0, args.set_size, 11), range(1, args.runs + 1)
    warm = Recipe(epochs=1, batch_size=128, select="last")  # the first torch / vmap calls of a process: not timed
    for lockstep in (False, True):
        target_l2_curves(make, train, targets, warm, [1, 2], mean=mean, std=std, lockstep=lockstep)
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

    # use case 3: K seeds retrained on their own per-seed draws of one size, evaluated on val and test every epoch
    recipe = Recipe(
        epochs=args.retrain_epochs, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
        step_size=5, gamma=0.5, select="val",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    n_all = len(data) - 500
    draws = [data.subset(np.sort(rng.choice(n_all, args.subset, replace=False))) for _ in range(args.seeds)]
    val, test = data.subset(range(n_all, n_all + 150)), data.subset(range(n_all + 150, n_all + 500))
    kw = {"mean": mean, "std": std, "val": val, "test": test, "device": "cpu", "record": False}
    seeds = list(range(1, args.seeds + 1))

    def apart():
        out = []
        for seed, train in zip(seeds, draws, strict=True):
            seed_everything(seed)
            out.append(train_model(make(), train, recipe, seed, **kw))
        return out

    t_sep, sep = _time(apart, args.repeat)
    t_lock, lock = _time(lambda: train_lockstep(make, draws, recipe, seeds, **kw), args.repeat)
    diff = max(
        abs(a.summary["test_acc_selected"] - b.summary["test_acc_selected"]) for a, b in zip(sep, lock, strict=True)
    )
    print(
        f"retrain: {args.seeds} seeds x {args.retrain_epochs} epochs on their own {args.subset}-sample draws: one at a "
        f"time {t_sep:.2f} s, lockstep {t_lock:.2f} s, ratio {t_sep / t_lock:.1f}x "
        f"(max |diff| of the test accuracy {diff:.1e})"
    )


if __name__ == "__main__":
    main()
