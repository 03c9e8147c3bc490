checkpoint prepare_data:
    output:
        train=f"{RESULTS}/{{ds}}/data/train.npz",
        val=f"{RESULTS}/{{ds}}/data/val.npz",
        test=f"{RESULTS}/{{ds}}/data/test.npz",
        info=f"{RESULTS}/{{ds}}/data/info.json",
    params:
        cfg=stage_cfg(),
        data_dir=config["data_dir"],
    log:
        f"{RESULTS}/{{ds}}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/prepare_data.tsv"
    threads: 1
    conda:
        "../envs/lpntk.yaml"
    script:
        "../scripts/prepare_data.py"
