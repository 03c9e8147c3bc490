rule difficulty:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        kernels=lambda wc: kernel_files(wc.ds),
        reference=paths.reference_file("model.pt"),
    output:
        sets=paths.difficulty_file("sets.csv"),
        curves=paths.difficulty_file("curves.npz"),
        auc=report(
            paths.difficulty_file("auc.csv"),
            caption="../report/difficulty.rst",
            category="Use case 1 - learning difficulty",
        ),
        auc_md=paths.difficulty_file("auc.md"),
        auc_per_class=paths.difficulty_file("auc_per_class.csv"),
        figure=report(
            paths.difficulty_file("curves.png"),
            caption="../report/difficulty.rst",
            category="Use case 1 - learning difficulty",
        ),
        figure_pdf=paths.difficulty_file("curves.pdf"),
        summary=paths.difficulty_file("summary.json"),
    log:
        paths.log_file("difficulty"),
    benchmark:
        paths.benchmark_file("difficulty")
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
        ld=paths.ld_size_file("ld.csv"),
        correlation=report(
            paths.ld_size_file("correlation.csv"),
            caption="../report/ld_size.rst",
            category="Use case 1 - learning difficulty",
        ),
        correlation_md=paths.ld_size_file("correlation.md"),
        heatmap=report(
            paths.ld_size_file("correlation.png"),
            caption="../report/ld_size.rst",
            category="Use case 1 - learning difficulty",
        ),
        heatmap_pdf=paths.ld_size_file("correlation.pdf"),
        summary=paths.ld_size_file("summary.json"),
    log:
        paths.log_file("ld_size"),
    benchmark:
        paths.benchmark_file("ld_size")
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
