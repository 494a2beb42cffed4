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


def all_targets():
    return [layout.distort_manifest_merged(OUTDIR, d) for d in DATASETS]
