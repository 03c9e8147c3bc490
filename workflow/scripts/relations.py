"""Adapter: rule relations -> lpntk.stages.relations.relations_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.relations import relations_stage

with job_log(snakemake.log[0]):
    relations_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.kernels),
        Path(snakemake.input.info).parent,
        snakemake.input.reference,
        dict(snakemake.output),
        snakemake.threads,
        snakemake.config["mlflow"],
    )
