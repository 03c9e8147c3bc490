rule gallery:
    input:
        unpack(gallery_inputs),
    output:
        figure=report(
            paths.gallery_file("gallery.png"),
            caption="../report/gallery.rst",
            category="Samples",
        ),
        figure_pdf=paths.gallery_file("gallery.pdf"),
        samples=paths.gallery_file("samples.csv"),
    log:
        paths.log_file("gallery"),
    benchmark:
        paths.benchmark_file("gallery")
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
