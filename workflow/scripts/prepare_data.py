"""Adapter: rule prepare_data -> lpntk.stages.prepare_data_stage.prepare_data_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.prepare_data_stage import prepare_data_stage

with job_log(snakemake.log[0]):
    prepare_data_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        outputs=dict(snakemake.output),
        data_dir=snakemake.params.data_dir,
        mlflow_cfg=snakemake.config["mlflow"],
    )
