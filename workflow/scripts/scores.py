"""Adapter: rule scores -> lpntk.stages.scores_stage.scores_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.scores_stage import scores_stage

with job_log(snakemake.log[0]):
    scores_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        summaries=list(snakemake.input.summaries),
        dynamics=list(snakemake.input.dynamics),
        outputs=dict(snakemake.output),
        seeds=snakemake.params.seeds,
        mlflow_cfg=snakemake.config["mlflow"],
    )
