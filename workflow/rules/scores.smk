# scores/seed<s>: training run s's scores, which select retraining seed s's subsets (prune); scores/scores: the
# mean over scores.seeds, the stage's table of its own (scores.enabled).
rule scores:
    input:
        unpack(score_files),
    output:
        table=f"{RESULTS}/{{ds}}/scores/{{part}}.csv",
        info=f"{RESULTS}/{{ds}}/scores/{{part}}.json",
    log:
        f"{RESULTS}/{{ds}}/logs/scores/{{part}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/scores/{{part}}.tsv"
    wildcard_constraints:
        part=r"scores|seed\d+",
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("scores", lambda wc: wc.part),
        runtime=runtime("scores", lambda wc: wc.part),
    params:
        cfg=stage_cfg("train", "scores"),
        seeds=score_seeds,
    script:
        "../scripts/scores.py"
