rule gallery:
    input:
        unpack(gallery_inputs),
    output:
        figure=report(
            f"{RESULTS}/{{ds}}/gallery/gallery.png",
            caption="../report/gallery.rst",
            category="Samples",
        ),
        figure_pdf=f"{RESULTS}/{{ds}}/gallery/gallery.pdf",
        samples=f"{RESULTS}/{{ds}}/gallery/samples.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/gallery.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/gallery.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("gallery"),
        runtime=runtime("gallery"),
    params:
        cfg=stage_cfg("relations", "pruning", "gallery"),
    script:
        "../scripts/gallery.py"
