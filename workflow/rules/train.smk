rule train:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        model_best=paths.train_file("model_best.pt"),
        model_last=paths.train_file("model_last.pt"),
        dynamics=paths.train_file("dynamics.npz"),
        history=paths.train_file("history.csv"),
        summary=paths.train_file("summary.json"),
    log:
        paths.log_file("train"),
    benchmark:
        paths.benchmark_file("train")
    conda:
        "../envs/lpntk.yaml"
    threads: config["threads"]
    resources:
        **gpu("train"),
        mem_mb=mem_mb("train"),
        runtime=runtime("train"),
    params:
        cfg=stage_cfg("model", "train", "augment"),
    script:
        "../scripts/train.py"
