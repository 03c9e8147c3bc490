"""Speed and memory of the exact lpNTK engine (lpntk.kernel) beside the plain and the official approaches.

Model: the paper's MNIST CNN (1,199,882 parameters), randomly initialised (seed 0, untrained), float32, eval
mode, exact mode. Data: the MNIST training set from ``--data-dir`` (default: $LPNTK_DATA_DIR; torchvision
layout, ``<dir>/MNIST/raw``), normalised with mean 0.1307 / std 0.3081; if absent, random tensors of MNIST shape
with MNIST's class sizes (said so in the output). Every measurement runs in its own subprocess, so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` of that process, i.e. including the data and torch itself) is isolated.

* B1  largest class (digit 1, 6,742 images): lpntk_gram vs the plain baseline (torch.func vmap(grad) per-sample
      gradients of s(y).z/sqrt K, then Phi Phi^T) at n = 1,024, side by side, with their agreement; then
      lpntk_gram on the full class (time, peak RSS) and the plain baseline extrapolated to it (time from its two
      phases, memory = n * P * 4 bytes for Phi).
* B2  all 10 classes, per-class exact Grams, one process: time per class and total.
* B3  one step of forgetting prediction, 128 previous x 128 current samples (two consecutive batches of a
      non-shuffled loader): eNTK blocks (128 x 128 x 10 x 10) and the first-order logit changes (eNTK matrix-free,
      lpNTK, pNTK) vs the official loop (paper-protocols §3.1: per anchor, vmap(jacrev) of the anchor and of the
      batch, flatten per parameter, einsum per tensor, sum), timed on a few anchors after a warm-up and
      extrapolated to 128 with the median anchor time.
* The official per-pair approach on all 60,000 MNIST training images, extrapolated from the same timing.

Every timed call follows an untimed warm-up call. Lines "[machine now: ...]" give the fp32 GEMM throughput and the
load average between sections: other processes on the machine slow every figure (about 215 GFLOP/s is this
2-core machine when idle).

    LPNTK_DATA_DIR=/path/to/data python benchmarks/bench_kernel.py --repeat 3   # full run, ~7 min on 2 idle cores
    python benchmarks/bench_kernel.py --quick                                    # small sizes, ~1 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

MNIST_CLASS_SIZES = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MEAN, STD = 0.1307, 0.3081


# --------------------------------------------------------------------------------------------- workers


def load_mnist(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x (60000, 1, 28, 28) float32 normalised, y, description of the source)."""
    if data_dir and os.path.isdir(os.path.join(data_dir, "MNIST", "raw")):
        import torchvision

        ds = torchvision.datasets.MNIST(root=data_dir, train=True, download=False)
        x = ((ds.data.float() / 255.0 - MEAN) / STD).unsqueeze(1)
        return x, ds.targets.long(), f"real MNIST from {data_dir}"
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(MNIST_CLASS_SIZES)])
    y = y[torch.randperm(len(y), generator=g)]
    x = torch.randn(len(y), 1, 28, 28, generator=g)
    return x, y, "RANDOM tensors of MNIST shape (no MNIST found: set LPNTK_DATA_DIR or --data-dir)"


def make_model():
    from lpntk.models import build_model

    torch.manual_seed(0)
    return build_model("mnist_cnn", (1, 28, 28), 10).eval()


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def w_ours(spec: dict) -> dict:
    from lpntk.kernel import lpntk_gram

    x, y, _ = load_mnist(spec["data_dir"])
    idx = (y == spec["digit"]).nonzero().squeeze(1)[: spec["n"]]
    model = make_model()
    lpntk_gram(model, x[idx[:8]], y[idx[:8]], 10)  # warm-up (oneDNN primitive creation), not timed
    times, cpus = [], []
    for _ in range(spec.get("repeat", 1)):
        t, c = time.perf_counter(), time.process_time()
        G = lpntk_gram(model, x[idx], y[idx], 10, block_size=spec["block_size"])
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    if spec.get("save"):
        torch.save(G, spec["save"])
    best = min(range(len(times)), key=times.__getitem__)
    return {
        "n": len(idx),
        "seconds": times[best],
        "cpu_seconds": cpus[best],
        "all_seconds": times,
        "peak_rss_gb": peak_rss_gb(),
    }


def w_plain(spec: dict) -> dict:
    """Plain baseline: Phi by torch.func vmap(grad) (chunks written into a preallocated N x P matrix), Phi Phi^T."""
    from torch.func import functional_call, grad, vmap

    from lpntk.kernel import sign_vectors

    x, y, _ = load_mnist(spec["data_dir"])
    idx = (y == spec["digit"]).nonzero().squeeze(1)[: spec["n"]]
    x, y = x[idx], y[idx]
    model = make_model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    P = sum(p.numel() for p in params.values())
    k = 10
    s = sign_vectors(y, k) / math.sqrt(k)

    def f(p, xi, si):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0) @ si

    per_sample = vmap(grad(f), in_dims=(None, 0, 0))
    per_sample(params, x[:8], s[:8])  # warm-up, not timed
    t0 = time.perf_counter()
    Phi = torch.empty(len(x), P)
    chunk = spec.get("chunk", 64)
    with torch.no_grad():
        for a in range(0, len(x), chunk):
            g = per_sample(params, x[a : a + chunk], s[a : a + chunk])
            Phi[a : a + chunk] = torch.cat([g[n].reshape(len(g[n]), -1) for n in params], 1)
            del g
    t1 = time.perf_counter()
    G = Phi @ Phi.T
    t2 = time.perf_counter()
    if spec.get("save"):
        torch.save(G, spec["save"])
    return {
        "n": len(x),
        "seconds": t2 - t0,
        "grad_seconds": t1 - t0,
        "gram_seconds": t2 - t1,
        "P": P,
        "peak_rss_gb": peak_rss_gb(),
    }


def w_b2(spec: dict) -> dict:
    from lpntk.kernel import lpntk_gram

    x, y, _ = load_mnist(spec["data_dir"])
    model = make_model()
    lpntk_gram(model, x[:8], y[:8], 10)  # warm-up, not timed
    rows = []
    t_all = time.perf_counter()
    for c in range(10):
        idx = (y == c).nonzero().squeeze(1)
        if spec.get("per_class"):
            idx = idx[: spec["per_class"]]
        t, cpu = time.perf_counter(), time.process_time()
        G = lpntk_gram(model, x[idx], y[idx], 10, block_size=spec["block_size"])
        rows.append(
            {
                "class": c,
                "n": len(idx),
                "seconds": time.perf_counter() - t,
                "cpu_seconds": time.process_time() - cpu,
                "asym": float((G - G.T).abs().max()),
                "load": os.getloadavg()[0],
            }
        )
        del G
    return {"rows": rows, "total_seconds": time.perf_counter() - t_all, "peak_rss_gb": peak_rss_gb()}


def w_b3_ours(spec: dict) -> dict:
    from lpntk.forgetting import first_order_logit_change
    from lpntk.kernel import entk_blocks, logit_loss_gradient

    x, y, _ = load_mnist(spec["data_dir"])
    b = spec["batch"]
    xo, yo, xu, yu = x[:b], y[:b], x[b : 2 * b], y[b : 2 * b]
    model = make_model()
    lr = 0.01
    entk_blocks(model, xo[:4], xu[:4])  # warm-up, not timed
    first_order_logit_change(model, xo[:4], xu[:4], yu[:4], lr, kernel="lpntk", y_obs=yo[:4])
    first_order_logit_change(model, xo[:4], xu[:4], yu[:4], lr, kernel="entk")
    out = {}
    t = time.perf_counter()
    B = entk_blocks(model, xo, xu, block_size=spec["block_size"])
    out["entk_blocks"] = time.perf_counter() - t
    t = time.perf_counter()
    e = logit_loss_gradient(model, xu, yu)
    dz_blocks = -lr * torch.einsum("ijab,jb->ia", B, e) / len(xu)
    out["entk_pred_via_blocks"] = out["entk_blocks"] + time.perf_counter() - t
    for kern in ("entk", "lpntk", "pntk"):
        t = time.perf_counter()
        dz = first_order_logit_change(model, xo, xu, yu, lr, kernel=kern, y_obs=yo, block_size=spec["block_size"])
        out[f"pred_{kern}"] = time.perf_counter() - t
        if kern == "entk":
            out["entk_matrix_free_vs_blocks_relerr"] = float((dz - dz_blocks).abs().max() / dz_blocks.abs().max())
    if spec.get("save"):
        torch.save(B[: spec["anchors"]], spec["save"])
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def w_b3_official(spec: dict) -> dict:
    """The official eNTK loop (analysis/ntk.py empirical_ntk): per anchor, vmap(jacrev) of anchor and batch."""
    from torch.func import functional_call, jacrev, vmap

    x, y, _ = load_mnist(spec["data_dir"])
    b = spec["batch"]
    xo, xu = x[:b], x[b : 2 * b]
    model = make_model()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac_fn = vmap(jacrev(fnet_single), (None, 0))

    def empirical_ntk(x1, x2):
        jac1 = [j.flatten(2) for j in jac_fn(params, x1).values()]
        jac2 = [j.flatten(2) for j in jac_fn(params, x2).values()]
        return sum(torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2, strict=True))

    empirical_ntk(xo[:1], xu[:4])  # warm-up, not timed
    times, blocks = [], []
    for i in range(spec["anchors"]):
        t = time.perf_counter()
        blk = empirical_ntk(xo[i : i + 1], xu)  # (1, b, K, K)
        times.append(time.perf_counter() - t)
        blocks.append(blk[0])
    if spec.get("save"):
        torch.save(torch.stack(blocks), spec["save"])
    return {"seconds_per_anchor": statistics.median(times), "times": times, "peak_rss_gb": peak_rss_gb()}


def w_calibrate(spec: dict) -> dict:
    """fp32 GEMM throughput of this machine right now (2048 x 18816 times its transpose), a contention gauge."""
    a = torch.randn(2048, 18816)
    a @ a.T
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        a @ a.T
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * 2048 * 2048 * 18816 / best / 1e9}


WORKERS = {
    "calibrate": w_calibrate,
    "ours": w_ours,
    "plain": w_plain,
    "b2": w_b2,
    "b3_ours": w_b3_ours,
    "b3_official": w_b3_official,
}


# ------------------------------------------------------------------------------------------------ main


def run_worker(name: str, spec: dict, threads: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        name,
        "--spec",
        json.dumps(spec),
        "--threads",
        str(threads),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT ") :])
            res["process_wall_seconds"] = wall
            return res
    tail = (proc.stdout + proc.stderr)[-2000:]
    return {"error": f"worker {name} failed (exit {proc.returncode}): {tail}"}


def fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    if s < 3 * 365 * 86400:
        return f"{s / 86400:.1f} days"
    return f"{s / (365 * 86400):.1f} years"


def table(rows: list[list[str]], header: list[str]) -> str:
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w[i]) for i, c in enumerate(r))
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument(
        "--data-dir", default=os.environ.get("LPNTK_DATA_DIR"), help="torchvision MNIST root (default: $LPNTK_DATA_DIR)"
    )
    ap.add_argument("--block-size", type=int, default=256, help="lpntk block_size (samples per forward/backward)")
    ap.add_argument("--repeat", type=int, default=1, help="repeats of the n=1,024 lpntk timing (min is reported)")
    ap.add_argument("--anchors", type=int, default=None, help="official-loop anchors to time (default 4; quick 1)")
    ap.add_argument("--official-batch", type=int, default=128, help="batch of the official loop and of B3")
    ap.add_argument("--only", default="b1,b2,b3", help="comma-separated subset of b1,b2,b3")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    return ap


class _Bench:
    """What the sections share: the options, the workers' common spec, the results so far and a scratch folder."""

    def __init__(self, args: argparse.Namespace, base: dict, results: dict, tmp: str):
        self.args, self.base, self.results, self.tmp, self.quick = args, base, results, tmp, args.quick

    def target(self, ok: bool, what: str) -> str:
        if self.quick:
            return f"(target {what} applies to the full run)"
        return f"(target {what}: {'met' if ok else 'MISSED'})"

    def gauge(self) -> str:
        g = run_worker("calibrate", {}, self.args.threads).get("gflops", float("nan"))
        self.results.setdefault("gemm_gflops", []).append(g)
        return (
            f"[machine now: fp32 GEMM {g:.0f} GFLOP/s with {self.args.threads} threads, "
            f"load average {os.getloadavg()[0]:.2f}; other processes on the machine slow every figure]"
        )


def _b1_side_by_side(bench: _Bench, n_cmp: int) -> dict:
    """B1 on ``n_cmp`` samples of the largest class: lpntk_gram beside the plain vmap(grad) + Phi Phi^T (whose figures
    are returned)."""
    print(f"## B1: largest class (digit 1), n = {n_cmp:,} side by side", flush=True)
    ours = run_worker(
        "ours",
        {**bench.base, "digit": 1, "n": n_cmp, "repeat": bench.args.repeat, "save": os.path.join(bench.tmp, "ours.pt")},
        bench.args.threads,
    )
    plain = run_worker(
        "plain", {**bench.base, "digit": 1, "n": n_cmp, "save": os.path.join(bench.tmp, "plain.pt")}, bench.args.threads
    )
    bench.results["b1_ours"], bench.results["b1_plain"] = ours, plain
    if "error" in ours or "error" in plain:
        print(ours.get("error", ""), plain.get("error", ""))
    else:
        Go, Gp = torch.load(os.path.join(bench.tmp, "ours.pt")), torch.load(os.path.join(bench.tmp, "plain.pt"))
        err = float((Go.double() - Gp.double()).abs().max() / Gp.double().abs().max())
        ratio = plain["seconds"] / ours["seconds"]
        bench.results["b1_ratio"], bench.results["b1_relerr"] = ratio, err
        print(
            table(
                [
                    ["lpntk_gram (exact)", fmt_s(ours["seconds"]), f"{ours['peak_rss_gb']:.2f} GiB", "1.0x"],
                    [
                        "plain vmap(grad) + Phi Phi^T",
                        fmt_s(plain["seconds"]),
                        f"{plain['peak_rss_gb']:.2f} GiB",
                        f"{ratio:.1f}x slower",
                    ],
                    ["  of which per-sample grads", fmt_s(plain["grad_seconds"]), "", ""],
                    ["  of which Phi Phi^T", fmt_s(plain["gram_seconds"]), "", ""],
                ],
                ["method", "time", "peak RSS", "ratio"],
            )
        )
        print(
            f"speed-up {ratio:.1f}x {bench.target(ratio >= 10, '>= 10x')}; "
            f"max |G_ours - G_plain| / max |G_plain| = {err:.1e}\n"
        )
    return plain


def _b1_full_class(bench: _Bench, n_full: int, plain: dict) -> None:
    """B1 on the whole class: lpntk_gram measured, the plain method extrapolated from its side-by-side run."""
    print(f"## B1: full class, n = {n_full:,}", flush=True)
    full = run_worker("ours", {**bench.base, "digit": 1, "n": n_full}, bench.args.threads)
    bench.results["b1_full"] = full
    if "error" in full:
        print(full["error"])
    else:
        rows = [
            [
                "lpntk_gram (exact)",
                fmt_s(full["seconds"]),
                f"{full['peak_rss_gb']:.2f} GiB",
                f"measured (CPU time / threads {fmt_s(full['cpu_seconds'] / bench.args.threads)})",
            ]
        ]
        if "error" not in plain:
            r = n_full / plain["n"]
            t_ext = plain["grad_seconds"] * r + plain["gram_seconds"] * r * r
            mem = n_full * plain["P"] * 4 / 2**30
            bench.results["b1_plain_extrapolated"] = {"seconds": t_ext, "phi_gb": mem}
            rows.append(
                [
                    "plain vmap(grad) + Phi Phi^T",
                    fmt_s(t_ext),
                    f">= {mem:.1f} GiB (Phi alone)",
                    f"extrapolated from n = {plain['n']:,}, not run",
                ]
            )
        print(table(rows, ["method", "time", "peak RSS", "note"]))
        ok = full["peak_rss_gb"] * 2**30 <= 4e9
        print(f"peak RSS {full['peak_rss_gb']:.2f} GiB {bench.target(ok, '<= 4 GB = 3.73 GiB')}\n")


def _b2(bench: _Bench, per_class: int | None) -> None:
    """B2: the per-class exact Grams of all 10 classes (the first per_class of each in a quick run)."""
    print(bench.gauge())
    print(
        f"## B2: all 10 classes{f' (first {per_class} of each)' if per_class else ''}, per-class exact Grams",
        flush=True,
    )
    b2 = run_worker("b2", {**bench.base, "per_class": per_class}, bench.args.threads)
    bench.results["b2"] = b2
    if "error" in b2:
        print(b2["error"])
    else:
        rows = [
            [
                str(r["class"]),
                f"{r['n']:,}",
                fmt_s(r["seconds"]),
                fmt_s(r["cpu_seconds"] / bench.args.threads),
                f"{r['load']:.1f}",
            ]
            for r in b2["rows"]
        ]
        kernel_total = sum(r["seconds"] for r in b2["rows"])
        cpu_total = sum(r["cpu_seconds"] for r in b2["rows"]) / bench.args.threads
        bench.results["b2_total_seconds"], bench.results["b2_cpu_over_threads"] = kernel_total, cpu_total
        rows.append(["all", f"{sum(r['n'] for r in b2['rows']):,}", fmt_s(kernel_total), fmt_s(cpu_total), ""])
        print(table(rows, ["class", "n", "wall time", "CPU time / threads", "load avg (incl. this run)"]))
        print(
            f"total {fmt_s(kernel_total)} of kernels ({fmt_s(b2['process_wall_seconds'])} with process start "
            f"and data loading), peak RSS {b2['peak_rss_gb']:.2f} GiB "
            f"{bench.target(kernel_total <= 180, '<= 3 min')}\n"
        )


def _b3(bench: _Bench, batch: int, anchors: int) -> None:
    """B3: one step of forgetting prediction against the official loop, and the official approach on all of MNIST
    extrapolated."""
    print(bench.gauge())
    print(f"## B3: one step of forgetting prediction, {batch} previous x {batch} current samples", flush=True)
    o = run_worker(
        "b3_ours",
        {**bench.base, "batch": batch, "anchors": anchors, "save": os.path.join(bench.tmp, "b3_ours.pt")},
        bench.args.threads,
    )
    off = run_worker(
        "b3_official",
        {**bench.base, "batch": batch, "anchors": anchors, "save": os.path.join(bench.tmp, "b3_off.pt")},
        bench.args.threads,
    )
    bench.results["b3_ours"], bench.results["b3_official"] = o, off
    if "error" in o or "error" in off:
        print(o.get("error", ""), off.get("error", ""))
    else:
        Bo, Bf = torch.load(os.path.join(bench.tmp, "b3_ours.pt")), torch.load(os.path.join(bench.tmp, "b3_off.pt"))
        err = float((Bo.double() - Bf.double()).abs().max() / Bf.double().abs().max())
        t_off = off["seconds_per_anchor"] * batch
        rows = [
            [
                "official loop (eNTK blocks)",
                fmt_s(t_off),
                f"{batch} x median of {anchors} anchor(s), {off['seconds_per_anchor']:.2f} s",
                "1.0x",
                f"{off['peak_rss_gb']:.1f} GiB",
            ]
        ]
        for key, label in [
            ("entk_blocks", "entk_blocks (all blocks)"),
            ("entk_pred_via_blocks", "eNTK prediction via blocks"),
            ("pred_entk", "eNTK prediction, matrix-free J.g"),
            ("pred_lpntk", "lpNTK prediction (cross Gram)"),
            ("pred_pntk", "pNTK prediction (cross Gram)"),
        ]:
            rows.append(
                [
                    label,
                    fmt_s(o[key]),
                    "measured",
                    f"{t_off / o[key]:.0f}x faster",
                    f"{o['peak_rss_gb']:.1f} GiB" if key == "entk_blocks" else "",
                ]
            )
        bench.results["b3_ratio_blocks"] = t_off / o["entk_blocks"]
        print(table(rows, ["method", "time", "how", "vs official", "peak RSS"]))
        print(
            f"eNTK blocks {t_off / o['entk_blocks']:.0f}x faster than the official loop "
            f"{bench.target(t_off / o['entk_blocks'] >= 50, '>= 50x')}; blocks agree to {err:.1e} (relative); "
            f"matrix-free vs blocks prediction agree to {o['entk_matrix_free_vs_blocks_relerr']:.1e}\n"
        )
        # official per-pair approach on all of MNIST: one vmap(jacrev) call per (anchor, batch of 128)
        N = 60000
        calls = sum(math.ceil((N - i) / 128) for i in range(N))
        t_call = off["seconds_per_anchor"] * (128 / batch)
        bench.results["official_all_mnist_seconds"] = calls * t_call
        print("## Official per-pair approach on all 60,000 MNIST training images (extrapolated)")
        print(
            f"N(N+1)/2 = {N * (N + 1) // 2:,} pairs in {calls:,} anchor-batch calls of vmap(jacrev) on "
            f"1 + 128 samples, {t_call:.2f} s each here{f' (scaled from batch {batch})' if batch != 128 else ''}"
            f": {fmt_s(calls * t_call)} on this machine ({bench.args.threads} threads); "
            f"storage of all blocks {N * (N + 1) / 2 * 100 * 4 / 1e9:,.0f} GB.\n"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.worker:
        res = WORKERS[args.worker](json.loads(args.spec))
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    only = set(args.only.split(","))
    quick = args.quick
    n_cmp = 256 if quick else 1024
    n_full = 1024 if quick else MNIST_CLASS_SIZES[1]
    per_class = 256 if quick else None
    anchors = args.anchors or (1 if quick else 4)
    batch = 32 if quick else args.official_batch
    base = {"data_dir": args.data_dir, "block_size": args.block_size}
    _, _, source = load_mnist(args.data_dir)
    results: dict = {"quick": quick, "threads": args.threads, "data": source}
    print(f"# bench_kernel  ({'quick' if quick else 'full'} run)")
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"data: {source}")
    print("model: MnistCNN (1,199,882 params), randomly initialised (seed 0, untrained), float32, eval, exact mode\n")
    bench = _Bench(args, base, results, tempfile.mkdtemp(prefix="bench_kernel_"))
    print(bench.gauge(), "\n")
    if "b1" in only:
        _b1_full_class(bench, n_full, _b1_side_by_side(bench, n_cmp))
    if "b2" in only:
        _b2(bench, per_class)
    if "b3" in only:
        _b3(bench, batch, anchors)
    print(bench.gauge())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
