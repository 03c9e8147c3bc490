"""Adapter: rule prepare_data -> lpntk.stages.data.prepare_data_stage."""

from pathlib import Path

from lpntk.stages.common import job_log
from lpntk.stages.data import prepare_data_stage

with job_log(snakemake.log[0]):
    prepare_data_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        Path(snakemake.output.info).parent,
        snakemake.params.data_dir,
        snakemake.config["mlflow"],
    )
