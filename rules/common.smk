# Config validation, shard lists and targets. Paths come from miqd.layout, which the CLI uses too.
import json

import miqd.config
from miqd import layout
from miqd.models.registry import groups, load_registry

miqd.config.validate(config)

OUTDIR = config["outdir"]
DATASETS = list(config["sources"])
# the label ensemble, by (task, GPU group); only tasks whose source dataset is configured run
MODEL_GROUPS = {
    key: specs
    for key, specs in groups(load_registry(config["infer"]["registry"])).items()
    if key[0] in config["infer"]["tasks"] and layout.TASK_DATASET[key[0]] in DATASETS
}


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",
    task="cls|det|ins",
    group="|".join(sorted({g for _, g in MODEL_GROUPS})) or "none",


def shards(dataset):
    return layout.shard_ids(config["sources"][dataset]["shards"])


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


def infer_targets():
    return [
        layout.infer_index(OUTDIR, task, group, shard)
        for task, group in MODEL_GROUPS
        for shard in shards(layout.TASK_DATASET[task])
    ]


def distort_targets():
    targets = []
    for d in DATASETS:
        targets.append(layout.distort_manifest_merged(OUTDIR, d))
        targets.extend(layout.distort_figures(OUTDIR, d).values())
    return targets


def all_targets():
    return distort_targets() + infer_targets()
