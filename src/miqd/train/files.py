"""Names of training runs and of the files inside `layout.train_dir` / `layout.evaluate_dir`.

The rules and the commands both take their paths from here. A run is (model, task, label) and
is named `<model>_<task>_<label>`, e.g. `ra_miqa_cls_composite`.
"""

from __future__ import annotations

from pathlib import Path

from miqd import layout

REPORT = "report"  # evaluate/<REPORT>/: the tables of all runs (never a run name: runs have 3 parts)
TABLES = ("table5", "table6", "table7", "table8", "severity", "cross_task")


def run_name(run: dict) -> str:
    return f"{run['model']}_{run['task']}_{run['label']}"


def find_run(config: dict, name: str) -> dict:
    from miqd.errors import InputError

    runs = {run_name(r): r for r in config["train"]["runs"]}
    if name not in runs:
        raise InputError(f"no training run {name!r} in train.runs; configured: {', '.join(runs) or 'none'}")
    return runs[name]


def evaluated_tasks(config: dict) -> list[str]:
    """Validation sets to score runs on: evaluate.tasks (those whose dataset the config has)."""
    tasks = config["evaluate"]["tasks"]
    if config["train"]["source"] == "published":
        return list(tasks)
    return [t for t in tasks if layout.TASK_DATASET[t] in config["sources"]]


def train_outputs(outdir: str, run: str) -> dict[str, str]:
    """The train job's declared outputs: the best checkpoint, its metrics log and plot."""
    d = Path(layout.train_dir(outdir, run))
    return {"model": str(d / "model.pt"), "metrics": str(d / "metrics.csv"), "plot": str(d / "metrics.png")}


def work_dir(outdir: str, run: str) -> Path:
    """Checkpoints a killed job resumes from; not declared outputs, so Snakemake keeps them."""
    return Path(layout.train_dir(outdir, run)) / "work"


def evaluate_outputs(outdir: str, run: str) -> dict[str, str]:
    d = Path(layout.evaluate_dir(outdir, run))
    return {"predictions": str(d / "predictions.parquet"), "summary": str(d / "summary.csv")}


def baselines_table(outdir: str, task: str) -> str:
    """HVS / NR-IQA baseline scores of a task's validation images."""
    return str(Path(layout.evaluate_dir(outdir, "baselines")) / f"{task}.parquet")


def report_outputs(outdir: str) -> dict[str, str]:
    """The evaluate_report job's outputs: long-format CSVs, the paper-layout tables as data
    (report.json, from which report.md and the report page are rendered), and the figures."""
    d = Path(layout.evaluate_dir(outdir, REPORT))
    out = {}
    for t in TABLES:
        out[f"{t}_csv"] = str(d / f"{t}.csv")
    out["tables"] = str(d / "report.json")
    out["markdown"] = str(d / "report.md")
    out["cross_task_png"] = str(d / "cross_task.png")
    out["severity_png"] = str(d / "severity.png")
    out["scatter_png"] = str(d / "scatter.png")
    return out
