# Stage 3, distort: 250 region-weighted distortions per source, one job per shard.


rule distort:
    input:
        sources=layout.select_table(OUTDIR, "{dataset}", "{shard}"),
        masks=layout.roi_table(OUTDIR, "{dataset}", "{shard}"),
    output:
        manifest=layout.distort_manifest(OUTDIR, "{dataset}", "{shard}"),
        levels=layout.distort_levels(OUTDIR, "{dataset}", "{shard}"),
        seal=layout.distort_seal(OUTDIR, "{dataset}", "{shard}"),
    params:
        config=stage_params("distort"),
    log:
        layout.log_path(OUTDIR, "distort", "{dataset}-{shard}"),
    benchmark:
        layout.benchmark_path(OUTDIR, "distort", "{dataset}-{shard}"),
    threads: config["distort"]["threads"]
    resources:
        mem_mb=config["distort"]["resources"]["mem_mb"],
        runtime=config["distort"]["resources"]["runtime"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd distort --config {params.config:q} --dataset {wildcards.dataset}"
        " --sources {input.sources} --masks {input.masks}"
        " --manifest {output.manifest} --levels {output.levels} --seal {output.seal}"
        " --workers {threads} > {log} 2>&1"


rule merge_distort:
    input:
        manifests=lambda wildcards: [
            layout.distort_manifest(OUTDIR, wildcards.dataset, s) for s in shards(wildcards.dataset)
        ],
    output:
        layout.distort_manifest_merged(OUTDIR, "{dataset}"),
    log:
        layout.log_path(OUTDIR, "merge_distort", "{dataset}"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd merge --out {output} {input.manifests} > {log} 2>&1"


rule distort_figures:
    input:
        layout.distort_manifest_merged(OUTDIR, "{dataset}"),
    output:
        **layout.distort_figures(OUTDIR, "{dataset}"),
    log:
        layout.log_path(OUTDIR, "distort_figures", "{dataset}"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd plot-distort --manifest {input} --quality {output.quality}"
        " --examples {output.examples} > {log} 2>&1"
