"""What rules/train.smk asks of the config: runs, inputs, params, targets (kept out of the rules
file so that it stays a list of rules)."""

from __future__ import annotations

import json

from miqd import layout
from miqd.config import stage_json
from miqd.train import files


def runs(config: dict) -> dict[str, dict]:
    return {files.run_name(r): r for r in config["train"]["runs"]}


def eval_tasks(config: dict) -> list[str]:
    """Every task a table row is computed on: the evaluated ones and the runs' own."""
    return list(dict.fromkeys([*files.evaluated_tasks(config), *(r["task"] for r in config["train"]["runs"])]))


def params(config: dict, stage: str, run: str | None = None, all_runs: bool = True) -> str:
    """The stage's config slice. A run's job sees only its own run and a job about no run (the
    baselines) none, so adding a run reruns nothing else."""
    sub = json.loads(stage_json(config, stage))
    if run is not None:
        sub["train"]["runs"] = [runs(config)[run]]
    elif not all_runs:
        sub["train"]["runs"] = []
    return json.dumps(sub, sort_keys=True, separators=(",", ":"))


def task_data(config: dict, task: str) -> list[str]:
    """The label shards and split table a task's samples come from (none for published data)."""
    if config["train"]["source"] == "published":
        return []
    dataset = layout.TASK_DATASET[task]
    outdir = config["outdir"]
    shards = layout.shard_ids(config["sources"][dataset]["shards"])
    return [layout.label_table(outdir, task, s) for s in shards] + [layout.split_table(outdir, dataset)]


def train_inputs(config: dict, run: str) -> list[str]:
    return task_data(config, runs(config)[run]["task"])


def evaluate_run_inputs(config: dict, run: str) -> dict:
    tasks = dict.fromkeys([runs(config)[run]["task"], *files.evaluated_tasks(config)])
    return {"model": files.train_outputs(config["outdir"], run)["model"],
            "data": [p for t in tasks for p in task_data(config, t)]}


def report_inputs(config: dict) -> dict:
    outdir = config["outdir"]
    return {"predictions": [files.evaluate_outputs(outdir, r)["predictions"] for r in runs(config)],
            "summaries": [files.evaluate_outputs(outdir, r)["summary"] for r in runs(config)],
            "baselines": [files.baselines_table(outdir, t) for t in eval_tasks(config)]}


def train_gpus(config: dict) -> int:
    """GPUs a train job asks for: none on a CPU-only config."""
    return 0 if config["train"]["device"] == "cpu" else config["train"]["gpus"]


def targets(config: dict) -> list[str]:
    """Final outputs of stage 8: every run's checkpoint, metrics log and plot, and the report."""
    if not config["train"]["runs"]:
        return []
    out = [p for r in runs(config) for p in files.train_outputs(config["outdir"], r).values()]
    return out + list(files.report_outputs(config["outdir"]).values())
