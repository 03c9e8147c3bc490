"""Adapter: rule ld_size -> lpntk.stages.ld_size_stage.ld_size_stage."""

from lpntk.stages.common import job_log, prepared
from lpntk.stages.ld_size_stage import ld_size_stage

with job_log(snakemake.log[0]):
    ld_size_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        data=prepared(snakemake.input),
        outputs=dict(snakemake.output),
        threads=snakemake.threads,
        mlflow_cfg=snakemake.config["mlflow"],
    )
