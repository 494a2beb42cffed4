# Config validation, shard lists and targets. Paths come from miqd.layout, which the CLI uses too.
import json
import os

import miqd.config
import miqd.distort.seal
import miqd.preflight
from miqd import layout
from miqd.models.registry import groups, load_registry

miqd.config.validate(config)


# Stage 0, preflight: before any job runs (not in a dry run), every input the config names is
# checked (sources, ground truth, annotations, registry architectures and weights, training
# weights); all problems are reported at once and nothing starts. Its report is the log below.
onstart:
    miqd.preflight.run_for_workflow(config, layout.log_path(config["outdir"], "preflight", "preflight"))

OUTDIR = config["outdir"]
# the config files this run was started with, for the report's provenance block: jobs (local or
# SLURM, which parse this file again) inherit it, and Snakemake does not track it, so renaming a
# config file reruns nothing
os.environ["MIQD_CONFIGFILES"] = " ".join(str(f) for f in workflow.configfiles)
DATASETS = list(config["sources"])
# the label ensemble, by (task, GPU group); only tasks whose source dataset is configured run
MODEL_GROUPS = {
    key: specs
    for key, specs in groups(load_registry(config["infer"]["registry"])).items()
    if key[0] in config["infer"]["tasks"] and layout.TASK_DATASET[key[0]] in DATASETS
}
# tasks with a label ensemble, in the paper's order
TASKS = [t for t in ("cls", "det", "ins") if any(task == t for task, _ in MODEL_GROUPS)]
# label validation compares two disjoint parts of a task's ensemble: it needs two models
VALIDATED_TASKS = [t for t in TASKS if sum(len(s) for (task, _), s in MODEL_GROUPS.items() if task == t) >= 2]
for _task in sorted(set(TASKS) - set(VALIDATED_TASKS)):
    logger.warning(f"task {_task} has a single model: its labels cannot be validated (paper Table 4 needs two)")


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",
    task="cls|det|ins",
    group="|".join(sorted({g for _, g in MODEL_GROUPS})) or "none",


def shards(dataset):
    return layout.shard_ids(config["sources"][dataset]["shards"])


# The distorted PNGs are not rule outputs (millions); each distort shard's seal lists them with
# their sizes. A finished shard whose PNGs no longer match (a file deleted or truncated) loses its
# seal here, before the plan is made, so this run (or dry run) rebuilds it and what reads it.
for _dataset in DATASETS:
    for _shard in shards(_dataset):
        _bad = miqd.distort.seal.verify(layout.distort_seal(OUTDIR, _dataset, _shard), OUTDIR)
        if _bad:
            logger.warning(f"distort {_dataset} shard {_shard}: {len(_bad)} of its files are missing or "
                           f"changed size (first: {_bad[0]}); the shard is rebuilt")


def stage_params(stage):
    """The stage's slice of the config, as the job's params: editing it reruns exactly those jobs."""
    return lambda wildcards: miqd.config.stage_json(config, stage, wildcards.dataset)


def select_inputs(wildcards):
    src = config["sources"][wildcards.dataset]
    sel = config["select"][wildcards.dataset]
    inputs = {"labels": src["ground_truth"] if wildcards.dataset == "imagenet" else src["annotations"]}
    if "materialize" in src:
        inputs["images"] = src["images"]
    if sel["method"] == "list":
        inputs["list"] = sel["list"]
    return inputs


def roi_inputs(wildcards):
    inputs = {"sources": layout.select_table(OUTDIR, wildcards.dataset, wildcards.shard)}
    roi = config["roi"][wildcards.dataset]
    if roi["method"] == "coco_gt":
        inputs["annotations"] = roi["annotations"]
    return inputs


def infer_inputs(wildcards):
    dataset = layout.TASK_DATASET[wildcards.task]
    return {
        "sources": layout.select_table(OUTDIR, dataset, wildcards.shard),
        "manifest": layout.distort_manifest(OUTDIR, dataset, wildcards.shard),
    }


def group_models(wildcards):
    """The group's registry entries as JSON: the job's params, so editing a model reruns its group."""
    specs = MODEL_GROUPS[(wildcards.task, wildcards.group)]
    return json.dumps({"models": [s.as_dict() for s in specs]}, sort_keys=True)


def task_shards(task):
    return shards(layout.TASK_DATASET[task])


def task_models(wildcards):
    """The task's models as the label jobs need them (id, benchmark, random), in registry order.

    Passed as params: editing a model's benchmark reruns the labels of its task, nothing else.
    """
    specs = [s for (task, _), group in MODEL_GROUPS.items() if task == wildcards.task for s in group]
    return json.dumps([{"id": s.id, "benchmark": s.benchmark, "random": s.random_weights} for s in specs])


def label_inputs(wildcards):
    dataset = layout.TASK_DATASET[wildcards.task]
    inputs = {
        "indexes": [
            layout.infer_index(OUTDIR, task, group, wildcards.shard)
            for task, group in MODEL_GROUPS
            if task == wildcards.task
        ],
        "manifest": layout.distort_manifest(OUTDIR, dataset, wildcards.shard),
        "sources": layout.select_table(OUTDIR, dataset, wildcards.shard),
    }
    if dataset == "coco":
        inputs["annotations"] = config["sources"]["coco"]["annotations"]
    return inputs


def annotations_arg(wildcards, input):
    return f"--annotations {input.annotations}" if "annotations" in input.keys() else ""


def task_label_tables(wildcards):
    return [layout.label_table(OUTDIR, wildcards.task, s) for s in task_shards(wildcards.task)]


def label_targets():
    coco_tasks = {"det", "ins"} & set(TASKS)
    return (
        [layout.label_export_dir(OUTDIR, t) for t in TASKS]
        + ([layout.additional_info(OUTDIR)] if coco_tasks else [])
        + (list(layout.validation_table(OUTDIR).values()) if VALIDATED_TASKS else [])
        + compare_targets()
    )


def compare_targets():
    return list(layout.compare_outputs(OUTDIR).values()) if config["compare"]["published"] and TASKS else []


def split_targets():
    return [layout.split_table(OUTDIR, d) for d in DATASETS]


def infer_targets():
    return [
        layout.infer_index(OUTDIR, task, group, shard)
        for task, group in MODEL_GROUPS
        for shard in shards(layout.TASK_DATASET[task])
    ]


def seal_targets():
    """Every distort shard's seal: targets of every stage target, so a seal removed above (its PNGs
    damaged) reruns its shard even when what was built from it is up to date."""
    return [layout.distort_seal(OUTDIR, d, s) for d in DATASETS for s in shards(d)]


def distort_targets():
    targets = seal_targets()
    for d in DATASETS:
        targets.append(layout.distort_manifest_merged(OUTDIR, d))
        targets.extend(layout.distort_figures(OUTDIR, d).values())
    return targets


def all_targets():
    return (
        distort_targets()
        + infer_targets()
        + label_targets()
        + split_targets()
        + train_targets()
        + [layout.report_html(OUTDIR)]
    )
