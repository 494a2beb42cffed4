# Stage 2, roi: a binary ROI mask per selected source (method explicit in config).


rule roi:
    input:
        unpack(roi_inputs),
    output:
        layout.roi_table(OUTDIR, "{dataset}", "{shard}"),
    params:
        config=stage_params("roi"),
    log:
        layout.log_path(OUTDIR, "roi", "{dataset}-{shard}"),
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd roi --config {params.config:q} --dataset {wildcards.dataset}"
        " --sources {input.sources} --out {output} > {log} 2>&1"
