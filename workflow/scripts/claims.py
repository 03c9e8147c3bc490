"""Adapter: rule claims -> lpntk.stages.claims_stage.claims_stage."""

from lpntk.stages.claims_stage import claims_stage
from lpntk.stages.common import job_log

with job_log(snakemake.log[0]):
    inputs = snakemake.input
    claims_stage(
        dataset=snakemake.wildcards.ds,
        cfg=snakemake.params.cfg,
        outputs=dict(snakemake.output),
        difficulty=inputs.get("difficulty"),
        forgetting=inputs.get("forgetting"),
        pruning_runs=inputs.get("pruning_runs"),
        ld_size={"ld": inputs.ld, "summary": inputs.ld_summary} if inputs.get("ld") else None,
        mlflow_cfg=snakemake.config["mlflow"],
    )
