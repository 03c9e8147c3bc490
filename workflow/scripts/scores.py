"""Adapter: rule scores -> lpntk.stages.scores.scores_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.scores import scores_stage

with job_log(snakemake.log[0]):
    scores_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.summaries),
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
