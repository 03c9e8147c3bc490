"""Adapter: rule own_clusters -> lpntk.stages.own_clusters_stage.own_clusters_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.own_clusters_stage import own_clusters_stage

with job_log(snakemake.log[0]):
    own_clusters_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        data=prepared(snakemake.input),
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
