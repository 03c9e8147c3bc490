rule relations:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        kernels=lambda wc: kernel_files(wc.ds),
        reference=f"{RESULTS}/{{ds}}/reference/model.pt",
    output:
        shares=report(
            f"{RESULTS}/{{ds}}/relations/shares.csv",
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        shares_md=f"{RESULTS}/{{ds}}/relations/shares.md",
        distribution=f"{RESULTS}/{{ds}}/relations/distribution.csv",
        distribution_md=f"{RESULTS}/{{ds}}/relations/distribution.md",
        per_class=report(
            f"{RESULTS}/{{ds}}/relations/per_class.csv",
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        per_class_md=f"{RESULTS}/{{ds}}/relations/per_class.md",
        cross=f"{RESULTS}/{{ds}}/relations/cross_panel.npz",
        histogram=report(
            f"{RESULTS}/{{ds}}/relations/histogram.png",
            caption="../report/relations.rst",
            category="Use case 1 - relations",
        ),
        histogram_pdf=f"{RESULTS}/{{ds}}/relations/histogram.pdf",
        summary=f"{RESULTS}/{{ds}}/relations/summary.json",
    log:
        f"{RESULTS}/{{ds}}/logs/relations.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/relations.tsv"
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
