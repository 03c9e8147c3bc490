"""Adapter: rule summary -> lpntk.stages.summary_stage.summary_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.summary_stage import summary_stage

with job_log(snakemake.log[0]):
    summary_stage(
        results=snakemake.params.results,
        output=snakemake.output[0],
        mlflow_cfg=snakemake.config["mlflow"],
        others=True,
    )
