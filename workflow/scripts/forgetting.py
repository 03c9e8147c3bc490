"""Adapter: rule forgetting -> lpntk.stages.forgetting_stage.forgetting_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.forgetting_stage import forgetting_stage

with job_log(snakemake.log[0]):
    forgetting_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        recipe=snakemake.wildcards.recipe,
        seeds=list(snakemake.params.seeds),
        data=prepared(snakemake.input),
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
