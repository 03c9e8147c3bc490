checkpoint prepare_data:
    output:
        **paths.prepared_files(),
    log:
        paths.log_file("prepare_data"),
    benchmark:
        paths.benchmark_file("prepare_data")
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("prepare_data"),
        runtime=runtime("prepare_data"),
    params:
        cfg=stage_cfg(),
        data_dir=config["data_dir"],
    script:
        "../scripts/prepare_data.py"
