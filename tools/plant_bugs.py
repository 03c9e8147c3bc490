"""Plant the bugs we fear, one at a time, in a scratch copy of the tree, and check that the fast tests catch each.

Usage (from the repository root, in the project's environment)::

    python tools/plant_bugs.py              # every plant
    python tools/plant_bugs.py flip_noop    # some of them, by name
    python tools/plant_bugs.py --list

Each plant replaces one exact piece of library source (the plant fails loudly when that text is no longer there, e.g.
after a module was split: update its ``path``/``old`` then) in a copy of the tracked files under a temporary
directory, runs the plant's fast test files there with ``PYTHONPATH`` pointing at the copy, and reports the tests
that failed. The working tree is never modified. Exit status 1 if some plant survived (no test failed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


PLANTS = (
    Plant(
        "sign_onehot",
        "lpntk/kernel/_kernels.py",
        "s = -torch.ones(len(y), num_classes)",
        "s = torch.zeros(len(y), num_classes)",
        ("tests/test_brute_force_references.py", "tests/kernel"),
        "s(y) one-hot (0 off the label)",
    ),
    Plant(
        "sign_centered",
        "lpntk/kernel/_kernels.py",
        "s = -torch.ones(len(y), num_classes)",
        "s = -torch.ones(len(y), num_classes) / (num_classes - 1)",
        ("tests/test_brute_force_references.py", "tests/kernel"),
        "s(y) with -1/(K-1) off the label",
    ),
    Plant(
        "correct_inverted",
        "lpntk/train.py",
        'rec["correct"][idx, epoch] = logits.detach().argmax(1) == yb',
        'rec["correct"][idx, epoch] = logits.detach().argmax(1) != yb',
        ("tests/test_brute_force_references.py", "tests/train/test_train.py", "tests/scores/test_scores.py"),
        "recorded per-presentation correctness inverted",
    ),
    Plant(
        "flip_noop",
        "lpntk/data.py",
        "x = torch.where(flip[:, None, None, None], x.flip(-1), x)",
        "x = torch.where(flip[:, None, None, None], x, x)",
        ("tests/test_brute_force_references.py", "tests/train/test_train.py", "tests/data/test_data.py"),
        "horizontal flip a no-op",
    ),
    Plant(
        "exact_matmul_cudnn_kept",
        "lpntk/kernel/_engine.py",
        "    torch.backends.cudnn.allow_tf32 = False\n",
        "",
        ("tests/test_brute_force_references.py",),
        "exact_matmul leaves cuDNN TF32 on",
    ),
    Plant(
        "exact_matmul_no_restore",
        "lpntk/kernel/_engine.py",
        "        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old",
        "        pass",
        ("tests/test_brute_force_references.py",),
        "exact_matmul does not restore the flags",
    ),
    Plant(
        "ld_from_loss",
        "lpntk/difficulty.py",
        'return curve_area(res.dynamics["l2"])',
        'return curve_area(res.dynamics["loss"])',
        ("tests/test_brute_force_references.py", "tests/difficulty"),
        "learning difficulty summed from the loss instead of the L2 error",
    ),
    Plant(
        "curve_area_mean",
        "lpntk/difficulty.py",
        "return np.asarray(curves, dtype=np.float64).sum(axis=-1)",
        "return np.asarray(curves, dtype=np.float64).mean(axis=-1)",
        ("tests/test_brute_force_references.py", "tests/difficulty"),
        "curve area as the mean instead of the sum over epochs",
    ),
    Plant(
        "fpc_rescan",
        "lpntk/clustering.py",
        "col = S[new]  # = S(:, new)",
        "col = S[:][new]  # = S(:, new)",
        ("tests/clustering/test_clustering.py",),
        "farthest point clustering reads the whole Gram at every step (O(k N^2))",
    ),
)


def _tracked_copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        src = REPO / os.fsdecode(f)
        if src.is_file():
            (dest / os.fsdecode(f)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(f))


def run_plant(plant: Plant, pytest_args: list[str]) -> list[str]:
    """Failing test ids under the plant (empty: the plant survived)."""
    with tempfile.TemporaryDirectory(prefix=f"plant-{plant.name}-") as tmp:
        root = Path(tmp)
        _tracked_copy(root)
        target = root / plant.path
        text = target.read_text()
        if text.count(plant.old) != 1:
            raise SystemExit(f"plant {plant.name}: {plant.path} holds {text.count(plant.old)} copies of {plant.old!r}")
        target.write_text(text.replace(plant.old, plant.new))
        env = {**os.environ, "PYTHONPATH": str(root)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rf"]
        proc = subprocess.run(cmd + pytest_args + list(plant.tests), cwd=root, env=env, capture_output=True, text=True)
        return sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="plants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the plants and exit")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    args = ap.parse_args()
    if args.list:
        for p in PLANTS:
            print(f"{p.name:26s} {p.path:22s} {p.what}")
        return 0
    chosen = [p for p in PLANTS if not args.names or p.name in args.names]
    unknown = set(args.names) - {p.name for p in PLANTS}
    if unknown:
        raise SystemExit(f"unknown plants {sorted(unknown)}; see --list")
    survived = []
    for plant in chosen:
        failed = run_plant(plant, args.pytest_args.split())
        print(f"== {plant.name} ({plant.what}): {len(failed)} failing test(s) in {' '.join(plant.tests)}")
        for t in failed:
            print(f"   {t}")
        if not failed:
            survived.append(plant.name)
    if survived:
        print(f"SURVIVED: {', '.join(survived)}")
        return 1
    print("every plant was caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
