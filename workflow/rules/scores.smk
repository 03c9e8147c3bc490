rule scores:
    input:
        summaries=lambda wc: train_files(wc.ds),
        dynamics=lambda wc: train_outputs(wc.ds, "dynamics.npz"),
    output:
        table=f"{RESULTS}/{{ds}}/scores/scores.csv",
        info=f"{RESULTS}/{{ds}}/scores/scores.json",
    log:
        f"{RESULTS}/{{ds}}/logs/scores.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/scores.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("scores"),
        runtime=runtime("scores"),
    params:
        cfg=stage_cfg("train", "scores"),
    script:
        "../scripts/scores.py"
