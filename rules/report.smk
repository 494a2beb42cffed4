# The report: one self-contained HTML page of the run (distortions, labels with paper Figs. 4 and 6,
# the label-validation table, the splits, and whatever later stages add as sections), with the
# config files the workflow was started with in its provenance block (from the environment, set in
# common.smk: naming them in params would rerun the report whenever a config file is renamed).

envvars:
    "MIQD_CONFIGFILES",


rule report:
    input:
        distort=distort_targets(),
        labels=[layout.label_table(OUTDIR, t, s) for t in TASKS for s in task_shards(t)],
        validation=list(layout.validation_table(OUTDIR).values()) if VALIDATED_TASKS else [],
        splits=[p for d in DATASETS for p in (layout.split_table(OUTDIR, d), layout.split_balance(OUTDIR, d))],
        trained=train_targets(),
        compared=compare_targets(),
    output:
        layout.report_html(OUTDIR),
    params:
        config=miqd.config.stage_json(config, "report"),
        tasks=" ".join(TASKS),
        validated="--validated" if VALIDATED_TASKS else "",
        runs=" ".join(TRAIN_RUNS),
        compared="--compared" if compare_targets() else "",
    log:
        layout.log_path(OUTDIR, "report", "report"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd report --config {params.config:q} --tasks {params.tasks} {params.validated}"
        " --runs {params.runs} {params.compared} --configfiles $MIQD_CONFIGFILES --out {output} > {log} 2>&1"
