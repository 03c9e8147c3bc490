"""Adapter: rule cluster -> lpntk.stages.pruning.cluster_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.pruning import cluster_stage

with job_log(snakemake.log[0]):
    cluster_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.kernels),
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
