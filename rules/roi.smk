# Stage 2, roi: a binary ROI mask per selected source (method explicit in config).


def roi_inputs(wildcards):
    inputs = {"sources": layout.select_table(OUTDIR, wildcards.dataset, wildcards.shard)}
    roi = config["roi"][wildcards.dataset]
    if roi["method"] == "coco_gt":
        inputs["annotations"] = roi["annotations"]
    return inputs


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
