# The page covers the config's datasets (its inputs) and every other dataset with finished results under results/
# (lpntk.stages.summary_stage.present_results), so that a run of one config does not drop another's section.
rule summary:
    input:
        summary_inputs,
    output:
        report(
            paths.summary_page(),
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        paths.log_file("summary", ds=None),
    benchmark:
        paths.benchmark_file("summary", ds=None)
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
