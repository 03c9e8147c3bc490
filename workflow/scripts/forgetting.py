"""Adapter: rule forgetting -> lpntk.stages.forgetting.forgetting_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.forgetting import forgetting_stage

with job_log(snakemake.log[0]):
    forgetting_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.params.seeds),
        Path(snakemake.input.info).parent,
        dict(snakemake.output),
        snakemake.threads,
        snakemake.config["mlflow"],
    )
