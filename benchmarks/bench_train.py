"""Cost of recording per-sample dynamics during training, side by side with plain training.

Runs, alternately and ``--repeats`` times each, one epoch of the paper's MNIST CNN (SGD, batch 128) on
``--n`` real MNIST training images:

* ``plain``      -- a minimal training loop: forward, mean cross-entropy, backward, step;
* ``no-record``  -- lpntk.train.train_model with ``record=False``;
* ``record``     -- lpntk.train.train_model recording loss, correctness, L2 error, batch order, lr;

and prints the median epoch times and the ratios record / plain and record / no-record (target: at most
1.10). It also times one EL2N + GraNd snapshot of all n samples (done only at the configured score
epochs) relative to an epoch.

    python benchmarks/bench_train.py --n 12800 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lpntk.data import normalize, prepare_dataset, to_unit
from lpntk.models import build_model
from lpntk.train import Recipe, _score_snapshot, seed_everything, train_model

MEAN, STD = [0.1307], [0.3081]


def plain_epoch(model, x, y, batch_size, lr, generator):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    order = torch.randperm(len(y), generator=generator)
    for s in range(0, len(y), batch_size):
        idx = order[s : s + batch_size]
        xb = normalize(to_unit(x[idx]), MEAN, STD)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12800, help="training images (55,000 = all of MNIST train)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("LPNTK_DATA_DIR", "data"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    spec = {"source": "torchvision", "name": "MNIST", "val_fraction": 0.0}
    try:
        train = prepare_dataset("mnist", spec, args.data_dir).train
        source = f"real MNIST from {args.data_dir}"
    except FileNotFoundError:
        g = torch.Generator().manual_seed(0)
        from lpntk.data import Split

        train = Split(
            torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (60000,), generator=g),
            torch.arange(60000),
        )
        source = "random tensors of MNIST shape (MNIST not found: set LPNTK_DATA_DIR)"
    train = train.subset(range(min(args.n, len(train))))
    print(
        f"# {len(train)} training images ({source}), mnist_cnn, batch 128, {args.threads} threads, "
        f"torch {torch.__version__}",
        flush=True,
    )

    recipe = Recipe(epochs=1, batch_size=128, lr=0.01, schedule="none", select="last")
    times = {"plain": [], "no-record": [], "record": []}
    for rep in range(args.repeats):
        for name in times:
            seed_everything(rep)
            model = build_model("mnist_cnn", (1, 28, 28), 10)
            t0 = time.perf_counter()
            if name == "plain":
                plain_epoch(model, train.x, train.y, 128, 0.01, torch.Generator().manual_seed(rep))
            else:
                train_model(model, train, recipe, rep, mean=MEAN, std=STD, device="cpu", record=name == "record")
            times[name].append(time.perf_counter() - t0)
            print(f"  repeat {rep} {name:>9}: {times[name][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    seed_everything(0)
    model = build_model("mnist_cnn", (1, 28, 28), 10)
    t0 = time.perf_counter()
    _score_snapshot(model, train, MEAN, STD, recipe, torch.device("cpu"))
    snap = time.perf_counter() - t0

    print("\n| variant | median epoch (s) | vs plain | vs no-record |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {v / med['plain']:.3f} | {v / med['no-record']:.3f} |")
    ratio = med["record"] / med["plain"]
    print(
        f"\nrecording overhead: record / plain = {ratio:.3f} (target <= 1.10: "
        f"{'met' if ratio <= 1.10 else 'MISSED'}); record / no-record = {med['record'] / med['no-record']:.3f}"
    )
    print(
        f"EL2N + GraNd snapshot of {len(train)} samples (score epochs only): {snap:.2f} s = "
        f"{snap / med['plain']:.2f} x a plain epoch"
    )
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
