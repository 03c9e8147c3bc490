"""Write a results page (docs/results-<name>.md) from one finished run of a config: the headline verdicts, the claims
table, every stage table, the figures, the hardware, the wall time, and the measured time per stage beside the
estimate ``lpntk cost --json`` wrote before the run.

    python tools/results_page.py --configfile config/mnist-cpu.yaml --workdir <run dir> --estimate cost.json \
        --wall-seconds 3600 --load "1.2 at the start, 2.1 at the end" --out docs/results-mnist.md

The job start-ups: every job's stage start-up as ``benchmarks/costs.json`` measured it (``host.startup_s``), summed
over the run's jobs, as a share of the machine's time over the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from lpntk.config import load_config
from lpntk.cost import load_costs, startup_seconds
from lpntk.plan import enabled_sections
from lpntk.stages.claims_stage import count_text
from lpntk.timing import comparison_markdown, estimate_vs_measured, measured_stage_seconds, startup_seconds_of_run

REPO = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, Python " + (
        platform.python_version()
    )


def _demote(text: str, levels: int = 2) -> str:
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in text.splitlines())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", required=True)
    ap.add_argument("--workdir", required=True, help="the run's directory (results/ under it)")
    ap.add_argument("--estimate", required=True, help="lpntk cost --json of the config (the cost model compared)")
    ap.add_argument("--estimate-before", help="lpntk cost --json written before the run, if the model changed since")
    ap.add_argument("--wall-seconds", type=float, required=True)
    ap.add_argument("--load", default="not recorded")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cores", type=int, default=2, help="cores of the machine the run used (snakemake --cores)")
    args = ap.parse_args(argv)

    import torch

    work = Path(args.workdir)
    cfg = load_config(args.configfile, REPO / "workflow" / "schemas" / "config.schema.yaml")
    estimate = json.loads(Path(args.estimate).read_text())
    before = json.loads(Path(args.estimate_before).read_text()) if args.estimate_before else {"datasets": {}}
    startup = startup_seconds(load_costs(REPO / "benchmarks" / "costs.json")["cpu"])
    starting = 0.0
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    out = Path(args.out)
    figures = out.parent / (out.stem + "-figures")
    figures.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Results: `{args.configfile}`",
        "",
        f"One complete run of `snakemake --cores 2 --configfile {args.configfile}` from a clean clone at commit "
        f"`{commit.strip()[:12]}`, on {_cpu()}, torch {torch.__version__}. Wall time of the whole invocation: "
        f"**{args.wall_seconds / 60:.1f} minutes** (load average {args.load}). How the verdicts are decided: "
        "[statistics.md](statistics.md).",
        "",
        "## Headline verdicts",
        "",
        "| claim | dataset | primary comparison | effect [95 % interval] | n | p | verdict | secondary |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds in cfg["datasets"]:
        path = work / "results" / ds / "claims" / "summary.json"
        if not path.exists():
            continue
        for h in json.loads(path.read_text())["headline"]:
            eff = h["effect"]
            effect = "n/a" if eff is None or eff != eff else f"{eff:.3g} [{h['low']:.3g}, {h['high']:.3g}]"
            p = "" if h["p"] is None or h["p"] != h["p"] else f"{h['p']:.2g}"
            n = count_text(h["n"], h["unit"])
            lines.append(
                f"| {h['claim']} | {ds} | {h['primary']} | {effect} | {n} | {p} | **{h['verdict']}** | "
                f"{h['secondary']} |"
            )
    for ds, block in cfg["datasets"].items():
        res = work / "results" / ds
        lines += ["", f"## {ds}: `{block['model']['name']}`", ""]
        claims = res / "claims" / "claims.md"
        if claims.exists():
            lines += ["### Every claim row", "", _demote(claims.read_text().strip(), 3), ""]
        for section in enabled_sections(block):
            table = res / section.file
            if table.exists():
                lines += [f"### {section.heading}", "", section.text, "", _demote(table.read_text().strip(), 3), ""]
        for png in sorted(res.rglob("*.png")):
            target = figures / f"{ds}-{png.parent.name}-{png.name}"
            shutil.copyfile(png, target)
            lines += [f"![{ds} {png.parent.name}/{png.name}]({figures.name}/{target.name})", ""]
        est = estimate["datasets"].get(ds, {})
        share = int(cfg["threads"]) / args.cores  # every job of these configs runs at the global threads
        measured = measured_stage_seconds(work / "results", ds)
        rows = estimate_vs_measured(est, measured, share=share, before=before["datasets"].get(ds))
        starting += startup_seconds_of_run(measured, startup)
        lines += [
            "### Time per stage: estimated, measured",
            "",
            "Estimated: `lpntk cost` for this config, in seconds of the whole CPU"
            + (
                " (the column before it: the cost model at the run's commit, printed before the run; the estimate "
                "beside it: the cost model since refitted on figures measured apart from any run, `benchmarks/"
                "bench_costs.py --host`)"
                if args.estimate_before
                else ""
            )
            + ". Measured: the sum of the stage's job wall times (Snakemake benchmarks), and the device seconds they "
            "held (x threads per job / cores: two 1-thread jobs side by side each hold half of the 2 cores). Target: "
            "within 1.5x, or within 5 s for a stage of a few seconds (its jobs' start-up).",
            "",
            comparison_markdown(rows),
        ]
    lines += [
        "## Job start-ups",
        "",
        f"The run's jobs spent about **{starting:,.0f} s** of the machine starting (every job's stage start-up as "
        "measured by `benchmarks/bench_costs.py --host`: a fresh Python importing the stage's adapter), "
        f"**{100 * starting / args.wall_seconds:.1f} %** of the wall time (target: under 10 %).",
        "",
    ]
    out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {out} and {figures}/")


if __name__ == "__main__":
    main()
