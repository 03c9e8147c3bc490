"""Adapter: rule kernel -> lpntk.stages.kernel.kernel_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.kernel import kernel_stage

with job_log(snakemake.log[0]):
    kernel_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        int(snakemake.wildcards.klass),
        Path(snakemake.input.info).parent,
        snakemake.input.reference,
        snakemake.output.gram,
        snakemake.threads,
        snakemake.config["mlflow"],
    )
