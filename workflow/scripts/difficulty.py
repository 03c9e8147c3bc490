"""Adapter: rule difficulty -> lpntk.stages.difficulty_stage.difficulty_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.difficulty_stage import difficulty_stage

with job_log(snakemake.log[0]):
    difficulty_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        kernels=list(snakemake.input.kernels),
        data=prepared(snakemake.input),
        reference=snakemake.input.reference,
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
