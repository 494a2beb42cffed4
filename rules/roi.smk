# Stage 2, roi: a binary ROI mask per selected source (method explicit in config: coco_gt, files,
# coseg). A shard's roi job depends only on that shard's select table: the DAG stays static.


rule roi:
    input:
        unpack(roi_inputs),
    output:
        layout.roi_table(OUTDIR, "{dataset}", "{shard}"),
    params:
        config=stage_params("roi"),
    log:
        layout.log_path(OUTDIR, "roi", "{dataset}-{shard}"),
    threads: lambda wildcards: config["roi"][wildcards.dataset]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd roi --config {params.config:q} --dataset {wildcards.dataset}"
        " --sources {input.sources} --out {output} --threads {threads} > {log} 2>&1"
