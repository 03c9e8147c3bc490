rule forgetting:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        steps=f"{RESULTS}/{{ds}}/forgetting/{{recipe}}/{{group}}/steps.csv",
        samples=f"{RESULTS}/{{ds}}/forgetting/{{recipe}}/{{group}}/samples.npz",
        summary=f"{RESULTS}/{{ds}}/forgetting/{{recipe}}/{{group}}/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/forgetting/{{recipe}}/{{group}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/forgetting/{{recipe}}/{{group}}.tsv"
    wildcard_constraints:
        group=r"seeds?\d+(-\d+)*",
        recipe=r"[A-Za-z0-9_]+",
    conda:
        "../envs/lpntk.yaml"
    threads: forgetting_threads
    resources:
        **gpu("forgetting"),
        mem_mb=mem_mb("forgetting", lambda wc: f"{wc.recipe}/{wc.group}"),
        runtime=runtime("forgetting", lambda wc: f"{wc.recipe}/{wc.group}"),
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
            f"{RESULTS}/{{ds}}/forgetting/table.csv",
            caption="../report/forgetting.rst",
            category="Use case 2 - forgetting",
        ),
        table_md=f"{RESULTS}/{{ds}}/forgetting/table.md",
        figure_png=report(
            f"{RESULTS}/{{ds}}/forgetting/scores.png",
            caption="../report/forgetting.rst",
            category="Use case 2 - forgetting",
        ),
        figure_pdf=f"{RESULTS}/{{ds}}/forgetting/scores.pdf",
        summary=f"{RESULTS}/{{ds}}/forgetting/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/forgetting_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/forgetting_table.tsv"
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
