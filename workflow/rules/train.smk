rule train:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        model_best=f"{RESULTS}/{{ds}}/train/seed{{seed}}/model_best.pt",
        model_last=f"{RESULTS}/{{ds}}/train/seed{{seed}}/model_last.pt",
        dynamics=f"{RESULTS}/{{ds}}/train/seed{{seed}}/dynamics.npz",
        history=f"{RESULTS}/{{ds}}/train/seed{{seed}}/history.csv",
        summary=f"{RESULTS}/{{ds}}/train/seed{{seed}}/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/train/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/train/seed{{seed}}.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: config["threads"]
    resources:
        **gpu("train"),
        mem_mb=mem_mb("train", lambda wc: f"seed{wc.seed}"),
        runtime=runtime("train", lambda wc: f"seed{wc.seed}"),
    params:
        cfg=stage_cfg("model", "train", "augment"),
    script:
        "../scripts/train.py"
