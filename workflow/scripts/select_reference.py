"""Adapter: rule select_reference -> lpntk.stages.kernel.select_reference_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.kernel import select_reference_stage

with job_log(snakemake.log[0]):
    select_reference_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.summaries),
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
