"""Adapter: rule cluster -> lpntk.stages.cluster_stage.cluster_stage."""

from lpntk.stages.cluster_stage import cluster_stage
from lpntk.stages.common import job_log

with job_log(snakemake.log[0]):
    cluster_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        seed=int(snakemake.wildcards.seed),
        kernels=list(snakemake.input.kernels),
        outputs=dict(snakemake.output),
        mlflow_cfg=snakemake.config["mlflow"],
    )
