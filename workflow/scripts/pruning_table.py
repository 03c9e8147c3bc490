"""Adapter: rule pruning_table -> lpntk.stages.pruning.pruning_table_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.pruning import pruning_table_stage

with job_log(snakemake.log[0]):
    pruning_table_stage(
        snakemake.wildcards.ds,
        snakemake.params.cfg,
        list(snakemake.input.runs),
        snakemake.input.subsets,
        dict(snakemake.output),
        snakemake.config["mlflow"],
    )
