# Stage 5, label: per-model consistency/accuracy and the MMOS labels, one job per (task, shard);
# and the labels exported in the published MIQD-2.5M layout, one job per task.


rule label:
    input:
        unpack(label_inputs),
    output:
        layout.label_table(OUTDIR, "{task}", "{shard}"),
    params:
        config=lambda wildcards: miqd.config.stage_json(config, "label"),
        models=task_models,
        annotations=annotations_arg,
    log:
        layout.log_path(OUTDIR, "label", "{task}-{shard}"),
    benchmark:
        layout.benchmark_path(OUTDIR, "label", "{task}-{shard}"),
    threads: config["label"]["threads"]
    resources:
        mem_mb=config["label"]["resources"]["mem_mb"],
        runtime=config["label"]["resources"]["runtime"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd label --config {params.config:q} --task {wildcards.task} --models {params.models:q}"
        " --indexes {input.indexes} --manifest {input.manifest} --sources {input.sources}"
        " {params.annotations} --out {output} > {log} 2>&1"


# one rule per task: the published layout names the folder after the task (miqa_cls, miqa_det, miqa_ins)
for _task in TASKS:

    rule:
        name:
            f"export_labels_{_task}"
        input:
            [layout.label_table(OUTDIR, _task, s) for s in task_shards(_task)],
        output:
            directory(layout.label_export_dir(OUTDIR, _task)),
        params:
            task=_task,
        log:
            layout.log_path(OUTDIR, "export_labels", _task),
        conda:
            "../envs/miqd.yaml"
        shell:
            "miqd export-labels --task {params.task} --out {output} {input} > {log} 2>&1"


# MIQA's det/ins loaders read the COCO annotations from miqa_det/additional_info/.
rule export_additional_info:
    input:
        lambda wildcards: config["sources"]["coco"]["annotations"],
    output:
        layout.additional_info(OUTDIR),
    log:
        layout.log_path(OUTDIR, "export_labels", "additional_info"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd export-labels --additional-info {input} --out {output} > {log} 2>&1"



# Regenerated vs published labels, when compare.published names the MIQD-2.5M download.
rule compare_labels:
    input:
        labels=[layout.label_table(OUTDIR, t, s) for t in TASKS for s in task_shards(t)],
    output:
        **layout.compare_outputs(OUTDIR),
    params:
        outdir=lambda wildcards, output: layout.outdir_of_compare(output.csv),
        published=config["compare"]["published"] or "",
        tasks=" ".join(TASKS),
    log:
        layout.log_path(OUTDIR, "compare", "labels"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd compare-labels --outdir {params.outdir:q} --published {params.published:q} --tasks {params.tasks}"
        " > {log} 2>&1"
