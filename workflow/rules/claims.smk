rule claims:
    input:
        unpack(lambda wc: claims_inputs(wc.ds)),
    output:
        csv=report(
            f"{RESULTS}/{{ds}}/claims/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        md=f"{RESULTS}/{{ds}}/claims/claims.md",
        summary=f"{RESULTS}/{{ds}}/claims/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/claims.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/claims.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("claims"),
        runtime=runtime("claims"),
    params:
        cfg=stage_cfg("difficulty", "forgetting", "pruning", "claims"),
    script:
        "../scripts/claims.py"
