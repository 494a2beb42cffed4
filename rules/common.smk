# Config validation, shard lists and targets. Paths come from miqd.layout, which the CLI uses too.
import miqd.config
from miqd import layout

miqd.config.validate(config)

OUTDIR = config["outdir"]
DATASETS = list(config["sources"])


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",


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


def all_targets():
    targets = []
    for d in DATASETS:
        targets.append(layout.distort_manifest_merged(OUTDIR, d))
        targets.extend(layout.distort_figures(OUTDIR, d).values())
    return targets
