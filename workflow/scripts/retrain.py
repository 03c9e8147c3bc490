"""Adapter: rule retrain -> lpntk.stages.pruning.retrain_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.pruning import retrain_stage

with job_log(snakemake.log[0]):
    retrain_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        snakemake.wildcards.unit,
        snakemake.wildcards.shard,
        Path(snakemake.input.info).parent,
        snakemake.input.subsets,
        snakemake.output[0],
        snakemake.threads,
        snakemake.config["mlflow"],
    )
