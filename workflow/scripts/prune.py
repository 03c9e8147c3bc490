"""Adapter: rule prune -> lpntk.stages.pruning.prune_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.pruning import prune_stage

with job_log(snakemake.log[0]):
    prune_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        snakemake.input.train,
        snakemake.input.clusters,
        snakemake.input.get("scores"),
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
