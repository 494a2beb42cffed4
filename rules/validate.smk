# Stage 6, validate: label stability over random 80/20 partitions of each task's models (paper
# Table 4), from the stored per-model scores; then the table across tasks, with a plot.


rule validate:
    input:
        task_label_tables,
    output:
        layout.validate_trials(OUTDIR, "{task}"),
    params:
        config=lambda wildcards: miqd.config.stage_json(config, "validate"),
        models=task_models,
    log:
        layout.log_path(OUTDIR, "validate", "{task}"),
    resources:
        mem_mb=config["validate"]["resources"]["mem_mb"],
        runtime=config["validate"]["resources"]["runtime"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd validate --config {params.config:q} --task {wildcards.task} --models {params.models:q}"
        " --out {output} {input} > {log} 2>&1"


rule validation_table:
    input:
        [layout.validate_trials(OUTDIR, t) for t in VALIDATED_TASKS],
    output:
        **layout.validation_table(OUTDIR),
    log:
        layout.log_path(OUTDIR, "validation_table", "table4"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd validation-table --csv {output.csv} --md {output.md} --plot {output.plot} {input} > {log} 2>&1"
