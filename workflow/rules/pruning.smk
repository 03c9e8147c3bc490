# Use case 3: every retraining seed's subsets are selected from its own training run -- FPC on its lpNTK Grams
# (cluster), its scores (scores.smk) -- by one prune job per seed and prune group (every method at one kept fraction,
# or one small-cluster data fraction: lpntk.dag), so that a change of one kept fraction reruns only its own jobs.
rule cluster:
    input:
        kernels=lambda wc: kernel_files(wc.ds, wc.seed),
    output:
        clusters=paths.cluster_file("clusters.npz"),
        summary=paths.cluster_file("summary.csv"),
    log:
        paths.log_file("cluster"),
    benchmark:
        paths.benchmark_file("cluster")
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("cluster"),
        runtime=runtime("cluster"),
    params:
        cfg=stage_cfg(keys=CLUSTER_KEYS),
    script:
        "../scripts/cluster.py"


rule own_clusters:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        clusters=paths.own_clusters_file("npz"),
        summary=paths.own_clusters_file("csv"),
    log:
        paths.log_file("own_clusters"),
    benchmark:
        paths.benchmark_file("own_clusters")
    conda:
        "../envs/lpntk.yaml"
    threads: retrain_threads
    resources:
        **gpu("own_clusters"),
        mem_mb=mem_mb("own_clusters"),
        runtime=runtime("own_clusters"),
    params:
        cfg=stage_cfg("model", "train", "augment", "kernel", keys=OWN_CLUSTERS_KEYS),
    script:
        "../scripts/own_clusters.py"


rule prune:
    input:
        unpack(prune_inputs),
    output:
        subsets=paths.subsets_file("npz"),
        table=paths.subsets_file("csv"),
    log:
        paths.log_file("prune"),
    benchmark:
        paths.benchmark_file("prune")
    wildcard_constraints:
        group=r"[A-Za-z0-9_.+-]+",
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("prune"),
        runtime=runtime("prune"),
    params:
        cfg=prune_cfg,
        subsets=group_subsets,
    script:
        "../scripts/prune.py"


rule retrain:
    input:
        unpack(retrain_inputs),
    output:
        paths.retrain_file(),
    log:
        paths.log_file("retrain"),
    benchmark:
        paths.benchmark_file("retrain")
    wildcard_constraints:
        unit=r"[A-Za-z0-9_.+-]+",
        shard=r"all|seed\d+",
    conda:
        "../envs/lpntk.yaml"
    threads: retrain_threads
    resources:
        **gpu("retrain"),
        mem_mb=mem_mb("retrain"),
        runtime=runtime("retrain"),
    params:
        cfg=stage_cfg("model", "train", "augment"),
        job=retrain_params,
    script:
        "../scripts/retrain.py"


rule pruning_table:
    input:
        runs=lambda wc: retrain_files(wc.ds),
        subsets=lambda wc: subsets_tables(wc.ds),
    output:
        csv=report(
            paths.pruning_file("table.csv"),
            caption="../report/pruning_table.rst",
            category="Use case 3 - pruning",
        ),
        md=paths.pruning_file("table.md"),
        runs=paths.pruning_file("runs.csv"),
        fig_redundant=report(
            paths.pruning_file("redundant_removal.png"),
            caption="../report/pruning_redundant.rst",
            category="Use case 3 - pruning",
        ),
        fig_redundant_pdf=paths.pruning_file("redundant_removal.pdf"),
        fig_small=report(
            paths.pruning_file("small_clusters.png"),
            caption="../report/pruning_small_clusters.rst",
            category="Use case 3 - pruning",
        ),
        fig_small_pdf=paths.pruning_file("small_clusters.pdf"),
    log:
        paths.log_file("pruning_table"),
    benchmark:
        paths.benchmark_file("pruning_table")
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("pruning_table"),
        runtime=runtime("pruning_table"),
    params:
        cfg=stage_cfg("train", "scores", "pruning"),
    script:
        "../scripts/pruning_table.py"
