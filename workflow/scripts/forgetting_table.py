"""Adapter: rule forgetting_table -> lpntk.stages.forgetting.forgetting_table_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.forgetting import forgetting_table_stage

with job_log(snakemake.log[0]):
    forgetting_table_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.summaries),
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
