# Use case 3: every retraining seed's subsets are selected from its own training run -- FPC on its lpNTK Grams
# (cluster), its scores (scores.smk) -- by one prune job per seed.
rule cluster:
    input:
        kernels=lambda wc: kernel_files(wc.ds, wc.seed),
    output:
        clusters=f"{RESULTS}/{{ds}}/cluster/seed{{seed}}/clusters.npz",
        summary=f"{RESULTS}/{{ds}}/cluster/seed{{seed}}/summary.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/cluster/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/cluster/seed{{seed}}.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("cluster", lambda wc: f"seed{wc.seed}"),
        runtime=runtime("cluster", lambda wc: f"seed{wc.seed}"),
    params:
        cfg=stage_cfg("train", "pruning"),
    script:
        "../scripts/cluster.py"


rule own_clusters:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
    output:
        clusters=f"{RESULTS}/{{ds}}/cluster/own.npz",
        summary=f"{RESULTS}/{{ds}}/cluster/own.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/own_clusters.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/own_clusters.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: retrain_threads
    resources:
        **gpu("own_clusters"),
        mem_mb=mem_mb("own_clusters"),
        runtime=runtime("own_clusters"),
    params:
        cfg=stage_cfg("model", "train", "augment", "kernel", "pruning"),
    script:
        "../scripts/own_clusters.py"


rule prune:
    input:
        unpack(prune_inputs),
    output:
        subsets=f"{RESULTS}/{{ds}}/pruning/seed{{seed}}/subsets.npz",
        table=f"{RESULTS}/{{ds}}/pruning/seed{{seed}}/subsets.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/prune/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/prune/seed{{seed}}.tsv"
    conda:
        "../envs/lpntk.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("prune", lambda wc: f"seed{wc.seed}"),
        runtime=runtime("prune", lambda wc: f"seed{wc.seed}"),
    params:
        cfg=stage_cfg("train", "scores", "pruning"),
    script:
        "../scripts/prune.py"


rule retrain:
    input:
        unpack(lambda wc: prepared_files(wc.ds)),
        subsets=retrain_subsets,
    output:
        f"{RESULTS}/{{ds}}/retrain/{{unit}}/{{shard}}.json",
    log:
        f"{RESULTS}/{{ds}}/logs/retrain/{{unit}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/retrain/{{unit}}/{{shard}}.tsv"
    wildcard_constraints:
        unit=r"[A-Za-z0-9_.+-]+",
        shard=r"all|seed\d+",
    conda:
        "../envs/lpntk.yaml"
    threads: retrain_threads
    resources:
        **gpu("retrain"),
        mem_mb=mem_mb("retrain", lambda wc: f"{wc.unit}/{wc.shard}"),
        runtime=runtime("retrain", lambda wc: f"{wc.unit}/{wc.shard}"),
    params:
        cfg=stage_cfg("model", "train", "augment", "scores", "pruning"),
    script:
        "../scripts/retrain.py"


rule pruning_table:
    input:
        runs=lambda wc: retrain_files(wc.ds),
        subsets=lambda wc: subsets_tables(wc.ds),
    output:
        csv=report(
            f"{RESULTS}/{{ds}}/pruning/table.csv",
            caption="../report/pruning_table.rst",
            category="Use case 3 - pruning",
        ),
        md=f"{RESULTS}/{{ds}}/pruning/table.md",
        runs=f"{RESULTS}/{{ds}}/pruning/runs.csv",
        fig_redundant=report(
            f"{RESULTS}/{{ds}}/pruning/redundant_removal.png",
            caption="../report/pruning_redundant.rst",
            category="Use case 3 - pruning",
        ),
        fig_redundant_pdf=f"{RESULTS}/{{ds}}/pruning/redundant_removal.pdf",
        fig_small=report(
            f"{RESULTS}/{{ds}}/pruning/small_clusters.png",
            caption="../report/pruning_small_clusters.rst",
            category="Use case 3 - pruning",
        ),
        fig_small_pdf=f"{RESULTS}/{{ds}}/pruning/small_clusters.pdf",
    log:
        f"{RESULTS}/{{ds}}/logs/pruning_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/pruning_table.tsv"
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
