"""Adapter: rule gallery -> lpntk.stages.gallery_stage.gallery_stage."""

from lpntk.stages.common import job_log
from lpntk.stages.gallery_stage import gallery_stage

with job_log(snakemake.log[0]):
    gallery_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        train=snakemake.input.train,
        kernels=list(snakemake.input.kernels),
        outputs=dict(snakemake.output),
        cross=snakemake.input.get("cross"),
        clusters=snakemake.input.get("clusters"),
        subsets=snakemake.input.get("subsets"),
        subsets_table=snakemake.input.get("subsets_table"),
        scores=snakemake.input.get("scores"),
        selection_kernels=snakemake.input.get("selection_kernels"),
        mlflow_cfg=snakemake.config["mlflow"],
    )
