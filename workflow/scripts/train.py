"""Adapter: rule train -> lpntk.stages.train_stage.train_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.train_stage import train_stage

with job_log(snakemake.log[0]):
    train_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        seed=int(snakemake.wildcards.seed),
        data=prepared(snakemake.input),
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
