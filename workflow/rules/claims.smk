rule claims:
    input:
        unpack(lambda wc: claims_inputs(wc.ds)),
    output:
        csv=report(
            paths.claims_file("claims.csv"),
            caption="../report/claims.rst",
            category="Claims",
        ),
        md=paths.claims_file("claims.md"),
        summary=paths.claims_file("summary.json"),
    log:
        paths.log_file("claims"),
    benchmark:
        paths.benchmark_file("claims")
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
