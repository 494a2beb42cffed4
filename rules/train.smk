# Stage 8, train and evaluate (docs/design.md, stage 8): one job per training run (train.runs, named
# <model>_<task>_<label>), one evaluation job per run (its predictions on every evaluated task's
# validation set), the HVS baselines per task, and one job assembling the paper's tables.
# GPU jobs: train (resources gpu = train.gpus) and evaluate_run (profiles/slurm); the rest use CPUs.
# The logic (inputs, params, targets) is in src/miqd/train/workflow.py.
from functools import partial

from miqd.train import files as train_files
from miqd.train import workflow as train_workflow

TRAIN_RUNS = train_workflow.runs(config)
# stage 8's final outputs, for `all`: train_targets()
train_targets = partial(train_workflow.targets, config)


wildcard_constraints:
    run="|".join(TRAIN_RUNS) or "none",


rule train:
    input:
        data=lambda wildcards: train_workflow.train_inputs(config, wildcards.run),
    output:
        **train_files.train_outputs(OUTDIR, "{run}"),
    params:
        config=lambda wildcards: train_workflow.params(config, "train", wildcards.run),
    log:
        layout.log_path(OUTDIR, "train", "{run}"),
    benchmark:
        layout.benchmark_path(OUTDIR, "train", "{run}"),
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["resources"]["mem_mb"],
        runtime=config["train"]["resources"]["runtime"],
        gpu=train_workflow.train_gpus(config),  # more than 1: DistributedDataParallel, one process each
        workers=config["train"]["workers"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd train --config {params.config:q} --run {wildcards.run} --workers {resources.workers}"
        " --threads {threads} --gpus {resources.gpu} > {log} 2>&1"


rule evaluate_run:
    input:
        unpack(lambda wildcards: train_workflow.evaluate_run_inputs(config, wildcards.run)),
    output:
        **train_files.evaluate_outputs(OUTDIR, "{run}"),
    params:
        config=lambda wildcards: train_workflow.params(config, "evaluate", wildcards.run),
    log:
        layout.log_path(OUTDIR, "evaluate", "{run}"),
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["evaluate"]["resources"]["mem_mb"],
        runtime=config["evaluate"]["resources"]["runtime"],
        workers=config["evaluate"]["workers"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd evaluate --config {params.config:q} --run {wildcards.run} --workers {resources.workers}"
        " --threads {threads} > {log} 2>&1"


rule evaluate_baselines:
    input:
        data=lambda wildcards: train_workflow.task_data(config, wildcards.task),
    output:
        train_files.baselines_table(OUTDIR, "{task}"),
    params:
        config=lambda wildcards: train_workflow.params(config, "evaluate", all_runs=False),
    log:
        layout.log_path(OUTDIR, "evaluate", "baselines-{task}"),
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["evaluate"]["resources"]["mem_mb"],
        runtime=config["evaluate"]["resources"]["runtime"],
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd evaluate --config {params.config:q} --baselines {wildcards.task} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule evaluate_report:
    input:
        unpack(lambda wildcards: train_workflow.report_inputs(config)),
    output:
        **train_files.report_outputs(OUTDIR),
    params:
        config=lambda wildcards: train_workflow.params(config, "evaluate"),
    log:
        layout.log_path(OUTDIR, "evaluate", "report"),
    conda:
        "../envs/miqd.yaml"
    shell:
        "miqd evaluate --config {params.config:q} --report --predictions {input.predictions}"
        " --baseline-tables {input.baselines} > {log} 2>&1"
