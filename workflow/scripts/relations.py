"""Adapter: rule relations -> lpntk.stages.relations_stage.relations_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.relations_stage import relations_stage

with job_log(snakemake.log[0]):
    relations_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        kernels=list(snakemake.input.kernels),
        data=prepared(snakemake.input),
        reference=snakemake.input.reference,
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
