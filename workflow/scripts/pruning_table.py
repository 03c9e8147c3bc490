"""Adapter: rule pruning_table -> lpntk.stages.pruning_table_stage.pruning_table_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.pruning_table_stage import pruning_table_stage

with job_log(snakemake.log[0]):
    pruning_table_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        runs=list(snakemake.input.runs),
        subsets_table=list(snakemake.input.subsets),
        outputs=dict(snakemake.output),
        mlflow_cfg=snakemake.config["mlflow"],
    )
