rule relations:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        kernels=lambda wc: kernel_files(wc.ds),
        reference=paths.reference_file("model.pt"),
    output:
        shares=report(
            paths.relations_file("shares.csv"),
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        shares_md=paths.relations_file("shares.md"),
        distribution=paths.relations_file("distribution.csv"),
        distribution_md=paths.relations_file("distribution.md"),
        per_class=report(
            paths.relations_file("per_class.csv"),
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        per_class_md=paths.relations_file("per_class.md"),
        cross=paths.relations_file("cross_panel.npz"),
        histogram=report(
            paths.relations_file("histogram.png"),
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        histogram_pdf=paths.relations_file("histogram.pdf"),
        summary=paths.relations_file("summary.json"),
    log:
        paths.log_file("relations"),
    benchmark:
        paths.benchmark_file("relations")
    conda:
        "../envs/lpntk.yaml"
    threads: config["threads"]
    resources:
        **gpu("relations"),
        mem_mb=mem_mb("relations"),
        runtime=runtime("relations"),
    params:
        cfg=stage_cfg("model", "kernel", "relations"),
    script:
        "../scripts/relations.py"
