rule select_reference:
    input:
        summaries=lambda wc: train_files(wc.ds),
    output:
        model=f"{RESULTS}/{{ds}}/reference/model.pt",
        info=f"{RESULTS}/{{ds}}/reference/reference.json",
    params:
        cfg=stage_cfg("kernel"),
        mlflow=config["mlflow"],
    log:
        f"{RESULTS}/{{ds}}/logs/select_reference.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/select_reference.tsv"
    conda:
        "../envs/lpntk.yaml"
    script:
        "../scripts/select_reference.py"


rule kernel:
    input:
        info=f"{RESULTS}/{{ds}}/data/info.json",
        train=f"{RESULTS}/{{ds}}/data/train.npz",
        reference=f"{RESULTS}/{{ds}}/reference/model.pt",
    output:
        gram=f"{RESULTS}/{{ds}}/kernel/class{{klass}}.npz",
    params:
        cfg=stage_cfg("model", "kernel"),
        mlflow=config["mlflow"],
    log:
        f"{RESULTS}/{{ds}}/logs/kernel/class{{klass}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/kernel/class{{klass}}.tsv"
    threads: config["threads"]
    conda:
        "../envs/lpntk.yaml"
    script:
        "../scripts/kernel.py"
