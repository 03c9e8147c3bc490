rule select_reference:
    input:
        summaries=lambda wc: train_files(wc.ds),
        checkpoints=lambda wc: reference_checkpoints(wc.ds),
    output:
        model=f"{RESULTS}/{{ds}}/reference/model.pt",
        info=f"{RESULTS}/{{ds}}/reference/reference.json",
    log:
        f"{RESULTS}/{{ds}}/logs/select_reference.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/select_reference.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("select_reference"),
        runtime=runtime("select_reference"),
    params:
        cfg=stage_cfg("kernel"),
    script:
        "../scripts/select_reference.py"


rule kernel:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        reference=f"{RESULTS}/{{ds}}/reference/model.pt",
    output:
        gram=f"{RESULTS}/{{ds}}/kernel/{{group}}.npz",
    log:
        f"{RESULTS}/{{ds}}/logs/kernel/{{group}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/kernel/{{group}}.tsv"
    wildcard_constraints:
        group=r"class(es)?\d+(-\d+)*",
    conda:
        "../envs/lpntk.yaml"
    threads: config["threads"]
    resources:
        **gpu("kernel"),
        mem_mb=mem_mb("kernel", lambda wc: wc.group),
        runtime=runtime("kernel", lambda wc: wc.group),
    params:
        cfg=stage_cfg("model", "kernel"),
        classes=kernel_group_classes,
    script:
        "../scripts/kernel.py"
