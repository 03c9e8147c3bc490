rule summary:
    input:
        summary_inputs,
    output:
        report(
            f"{RESULTS}/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        results={ds: summary_files(ds) for ds in DATASETS},
    script:
        "../scripts/summary.py"
