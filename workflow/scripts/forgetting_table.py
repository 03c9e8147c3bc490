"""Adapter: rule forgetting_table -> lpntk.stages.forgetting_table_stage.forgetting_table_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.forgetting_table_stage import forgetting_table_stage

with job_log(snakemake.log[0]):
    forgetting_table_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        summaries=list(snakemake.input.summaries),
        outputs=dict(snakemake.output),
        mlflow_cfg=snakemake.config["mlflow"],
    )
