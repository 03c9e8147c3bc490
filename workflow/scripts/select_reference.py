"""Adapter: rule select_reference -> lpntk.stages.select_reference_stage.select_reference_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.select_reference_stage import select_reference_stage

with job_log(snakemake.log[0]):
    select_reference_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        summaries=list(snakemake.input.summaries),
        checkpoints=list(snakemake.input.checkpoints),
        outputs=dict(snakemake.output),
        mlflow_cfg=snakemake.config["mlflow"],
    )
