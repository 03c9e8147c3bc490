"""Adapter: rule kernel -> lpntk.stages.kernel_stage.kernel_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.kernel_stage import kernel_stage

with job_log(snakemake.log[0]):
    kernel_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        classes=list(snakemake.params.classes),
        data=prepared(snakemake.input),
        reference=snakemake.input.checkpoint,
        output=snakemake.output.gram,
        threads=snakemake.threads,
        seed=int(snakemake.wildcards.seed),
        mlflow_cfg=snakemake.config["mlflow"],
    )
