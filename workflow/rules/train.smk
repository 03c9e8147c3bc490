rule train:
    input:
        info=f"{RESULTS}/{{ds}}/data/info.json",
        train=f"{RESULTS}/{{ds}}/data/train.npz",
    output:
        model_best=f"{RESULTS}/{{ds}}/train/seed{{seed}}/model_best.pt",
        model_last=f"{RESULTS}/{{ds}}/train/seed{{seed}}/model_last.pt",
        dynamics=f"{RESULTS}/{{ds}}/train/seed{{seed}}/dynamics.npz",
        history=f"{RESULTS}/{{ds}}/train/seed{{seed}}/history.csv",
        summary=f"{RESULTS}/{{ds}}/train/seed{{seed}}/summary.json",
    params:
        cfg=stage_cfg("model", "train", "augment"),
        mlflow=config["mlflow"],
    log:
        f"{RESULTS}/{{ds}}/logs/train/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/train/seed{{seed}}.tsv"
    threads: config["threads"]
    conda:
        "../envs/lpntk.yaml"
    script:
        "../scripts/train.py"
