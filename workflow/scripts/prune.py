"""Adapter: rule prune -> lpntk.stages.prune_stage.prune_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.prune_stage import prune_stage

with job_log(snakemake.log[0]):
    prune_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        seed=int(snakemake.wildcards.seed),
        train=snakemake.input.train,
        clusters=snakemake.input.clusters,
        scores=snakemake.input.get("scores"),
        own_clusters=snakemake.input.get("own_clusters"),
        subsets=snakemake.params.subsets,
        group=snakemake.wildcards.group,
        outputs=dict(snakemake.output),
        mlflow_cfg=snakemake.config["mlflow"],
    )
