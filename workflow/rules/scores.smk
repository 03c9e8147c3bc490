# scores/seed<s>: training run s's scores, which select retraining seed s's subsets (prune); scores/scores: the
# mean over scores.seeds, the stage's table of its own (scores.enabled).
rule scores:
    input:
        unpack(score_files),
    output:
        table=paths.scores_file("csv"),
        info=paths.scores_file("json"),
    log:
        paths.log_file("scores"),
    benchmark:
        paths.benchmark_file("scores")
    wildcard_constraints:
        part=r"scores|seed\d+",
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("scores"),
        runtime=runtime("scores"),
    params:
        cfg=stage_cfg("train", "scores"),
        seeds=score_seeds,
    script:
        "../scripts/scores.py"
