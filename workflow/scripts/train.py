"""Adapter: rule train -> lpntk.stages.train.train_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.train import train_stage

with job_log(snakemake.log[0]):
    train_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        int(snakemake.wildcards.seed),
        Path(snakemake.input.info).parent,
        dict(snakemake.output),
        snakemake.threads,
        snakemake.config["mlflow"],
    )
