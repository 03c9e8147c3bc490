"""Adapter: rule ld_size -> lpntk.stages.difficulty.ld_size_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.difficulty import ld_size_stage

with job_log(snakemake.log[0]):
    ld_size_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        Path(snakemake.input.info).parent,
        dict(snakemake.output),
        snakemake.threads,
        snakemake.config["mlflow"],
    )
