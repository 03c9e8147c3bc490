rule forgetting:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        steps=paths.forgetting_job_file("steps.csv"),
        samples=paths.forgetting_job_file("samples.npz"),
        summary=paths.forgetting_job_file("summary.json"),
    log:
        paths.log_file("forgetting"),
    benchmark:
        paths.benchmark_file("forgetting")
    wildcard_constraints:
        group=r"seeds?\d+(-\d+)*",
        recipe=r"[A-Za-z0-9_]+",
    conda:
        "../envs/lpntk.yaml"
    threads: forgetting_threads
    resources:
        **gpu("forgetting"),
        mem_mb=mem_mb("forgetting"),
        runtime=runtime("forgetting"),
    params:
        cfg=stage_cfg("model", "augment", "forgetting"),
        seeds=forgetting_group_seeds,
    script:
        "../scripts/forgetting.py"


rule forgetting_table:
    input:
        summaries=lambda wc: forgetting_files(wc.ds),
    output:
        table_csv=report(
            paths.forgetting_file("table.csv"),
            caption="../report/forgetting.rst",
            category="Use case 2 - forgetting",
        ),
        table_md=paths.forgetting_file("table.md"),
        figure_png=report(
            paths.forgetting_file("scores.png"),
            caption="../report/forgetting.rst",
            category="Use case 2 - forgetting",
        ),
        figure_pdf=paths.forgetting_file("scores.pdf"),
        summary=paths.forgetting_file("summary.json"),
    log:
        paths.log_file("forgetting_table"),
    benchmark:
        paths.benchmark_file("forgetting_table")
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("forgetting_table"),
        runtime=runtime("forgetting_table"),
    params:
        cfg=stage_cfg("forgetting"),
    script:
        "../scripts/forgetting_table.py"
