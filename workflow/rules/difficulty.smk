rule difficulty:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        kernels=lambda wc: kernel_files(wc.ds),
        reference=f"{RESULTS}/{{ds}}/reference/model.pt",
    output:
        sets=f"{RESULTS}/{{ds}}/difficulty/sets.csv",
        curves=f"{RESULTS}/{{ds}}/difficulty/curves.npz",
        auc=report(
            f"{RESULTS}/{{ds}}/difficulty/auc.csv",
            caption="../report/difficulty.rst",
            category="Use case 1 - learning difficulty",
        ),
        auc_md=f"{RESULTS}/{{ds}}/difficulty/auc.md",
        auc_per_class=f"{RESULTS}/{{ds}}/difficulty/auc_per_class.csv",
        figure=report(
            f"{RESULTS}/{{ds}}/difficulty/curves.png",
            caption="../report/difficulty.rst",
            category="Use case 1 - learning difficulty",
        ),
        figure_pdf=f"{RESULTS}/{{ds}}/difficulty/curves.pdf",
        summary=f"{RESULTS}/{{ds}}/difficulty/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/difficulty.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/difficulty.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: difficulty_threads
    resources:
        **gpu("difficulty"),
        mem_mb=mem_mb("difficulty"),
        runtime=runtime("difficulty"),
    params:
        cfg=stage_cfg("model", "kernel", "augment", "difficulty"),
    script:
        "../scripts/difficulty.py"


rule ld_size:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        ld=f"{RESULTS}/{{ds}}/ld_size/ld.csv",
        correlation=report(
            f"{RESULTS}/{{ds}}/ld_size/correlation.csv",
            caption="../report/ld_size.rst",
            category="Use case 1 - learning difficulty",
        ),
        correlation_md=f"{RESULTS}/{{ds}}/ld_size/correlation.md",
        heatmap=report(
            f"{RESULTS}/{{ds}}/ld_size/correlation.png",
            caption="../report/ld_size.rst",
            category="Use case 1 - learning difficulty",
        ),
        heatmap_pdf=f"{RESULTS}/{{ds}}/ld_size/correlation.pdf",
        summary=f"{RESULTS}/{{ds}}/ld_size/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/ld_size.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/ld_size.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: difficulty_threads
    resources:
        **gpu("ld_size"),
        mem_mb=mem_mb("ld_size"),
        runtime=runtime("ld_size"),
    params:
        cfg=stage_cfg("model", "kernel", "augment", "difficulty"),
    script:
        "../scripts/ld_size.py"
