# select_reference is a checkpoint: the reference seed it chooses names the kernel files of use cases 1-2
# (common.smk, reference_seed), which are that seed's own -- no kernel is computed twice.
checkpoint select_reference:
    input:
        summaries=lambda wc: train_files(wc.ds),
        checkpoints=lambda wc: reference_checkpoints(wc.ds),
    output:
        model=paths.reference_file("model.pt"),
        info=paths.reference_file("reference.json"),
    log:
        paths.log_file("select_reference"),
    benchmark:
        paths.benchmark_file("select_reference")
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("select_reference"),
        runtime=runtime("select_reference"),
    params:
        cfg=stage_cfg(keys=("kernel.seed", "kernel.checkpoint")),
    script:
        "../scripts/select_reference.py"


# Per-class lpNTK Grams at the checkpoint of training run <seed>: every pruning seed's (its subsets are selected
# from them) and the reference seed's (lpntk.plan.kernel_seeds).
rule kernel:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        checkpoint=seed_checkpoint,
    output:
        gram=paths.kernel_file(),
    log:
        paths.log_file("kernel"),
    benchmark:
        paths.benchmark_file("kernel")
    wildcard_constraints:
        group=r"class(es)?\d+(-\d+)*",
    conda:
        "../envs/lpntk.yaml"
    threads: config["threads"]
    resources:
        **gpu("kernel"),
        mem_mb=mem_mb("kernel", kernel_job_name),
        runtime=runtime("kernel", kernel_job_name),
    params:
        cfg=stage_cfg("model", "kernel"),
        classes=kernel_group_classes,
    script:
        "../scripts/kernel.py"
