"""Adapter: rule retrain -> lpntk.stages.retrain_stage.retrain_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.retrain_stage import retrain_stage

job = snakemake.params.job
with job_log(snakemake.log[0]):
    retrain_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        unit=snakemake.wildcards.unit,
        shard=snakemake.wildcards.shard,
        data=prepared(snakemake.input),
        subsets={s: list(snakemake.input.get(f"subsets_seed{s}", [])) for s in job["seeds"]},
        output=snakemake.output[0],
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
        job=job,
    )
