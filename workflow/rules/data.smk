checkpoint prepare_data:
    output:
        train=f"{RESULTS}/{{ds}}/data/train.npz",
        val=f"{RESULTS}/{{ds}}/data/val.npz",
        test=f"{RESULTS}/{{ds}}/data/test.npz",
        info=f"{RESULTS}/{{ds}}/data/info.json",
    log:
        f"{RESULTS}/{{ds}}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("prepare_data"),
        runtime=runtime("prepare_data"),
    params:
        cfg=stage_cfg(),
        data_dir=config["data_dir"],
    script:
        "../scripts/prepare_data.py"
