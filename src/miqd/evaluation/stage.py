"""`miqd evaluate --report`: every table and figure of the evaluation, from the scoring stage's files.

The tables are written as data first (long-format CSVs, and report.json in the paper's layout);
report.md and the report page's evaluation section are both rendered from report.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from miqd import layout
from miqd.errors import InputError
from miqd.evaluation import render
from miqd.evaluation.figures import figures
from miqd.evaluation.tables import HVS_NAMES, Document, document, tables
from miqd.io import read_table, write_text
from miqd.train import files
from miqd.train.data import LABELS
from miqd.train.evaluate import baseline_status

log = logging.getLogger("miqd.evaluate")


def _random_label_models(config: dict, task: str) -> list[str]:
    """The random-weight models behind a task's labels (this workflow's label tables only)."""
    import pyarrow.parquet as pq

    if config["train"]["source"] == "published":
        return []
    shards = layout.shard_ids(config["sources"][layout.TASK_DATASET[task]]["shards"])
    meta = pq.read_schema(layout.label_table(config["outdir"], task, shards[0])).metadata or {}
    return json.loads(meta.get(b"miqd.random_models", b"[]"))


def _run_notes(prediction_paths: list[str]) -> list[str]:
    """Per run: how its networks were initialised and which validation step it kept."""
    notes = []
    for p in prediction_paths:
        summary = Path(files.evaluate_outputs(str(Path(p).parents[2]), Path(p).parent.name)["summary"])
        first = pd.read_csv(summary, keep_default_na=False).iloc[0]
        note = f"{first['run']}: backbone {first['backbone_init']}"
        if first["region_init"]:
            note += f"; region encoder {first['region_init']}"
        notes.append(note + f"; best validation step {first['best_step']}")
    return notes


def _data_notes(config: dict, base: dict[str, pd.DataFrame]) -> list[str]:
    """Per task: its validation images, unreal (random-weight) labels, labels with no spread."""
    notes = []
    for task, df in base.items():
        notes.append(f"{task}: {render.plural(df['image_id'].nunique(), 'validation source')}, "
                     f"{render.plural(len(df), 'distorted image')}")
        random = _random_label_models(config, task)
        if random:
            notes.append(f"{task}: the labels come from models with random weights ({', '.join(random)}): "
                         f"these numbers are NOT real (the embedded demo)")
        for label in LABELS:
            if len(df) and np.ptp(df[label].to_numpy()) == 0:
                notes.append(f"{task}: every validation {label} label is {df[label].iloc[0]:.4g}; its "
                             f"correlations are undefined ({render.MISSING})")
    return notes


def load_document(path: str) -> Document:
    """report.json as written by `report` (for the report page)."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; run `miqd evaluate --report` (rule evaluate_report)")
    return Document.from_json(Path(path).read_text(encoding="utf-8"), path)


def report(config: dict, prediction_paths: list[str], baseline_paths: list[str]) -> dict[str, pd.DataFrame]:
    """Every table (long-format CSVs, report.json and report.md in the paper's layout) and figure."""
    outdir = config["outdir"]
    runs = config["train"]["runs"]
    preds = {Path(p).parent.name: read_table(p) for p in prediction_paths}
    base, missing = {}, []
    for p in baseline_paths:
        task = Path(p).stem
        base[task] = read_table(p)
        missing += [f"baseline {HVS_NAMES.get(name, name)} on {task}: not available — {why}"
                    for name, why in baseline_status(p).items() if why != "ok"]
    source = config["train"]["source"]
    data = "the published MIQD-2.5M download" if source == "published" else "this workflow"
    notes = [f"data: {data} ({outdir}); validation split of each task", *missing, *_run_notes(prediction_paths),
             *_data_notes(config, base)]
    t = tables(runs, base, preds)
    out = files.report_outputs(outdir)
    for name, df in t.items():
        write_text(out[f"{name}_csv"], df.to_csv(index=False, float_format="%.6g"))
    doc = document(t, notes, {k: Path(out[f"{k}_png"]).name for k in ("severity", "cross_task", "scatter")})
    write_text(out["tables"], doc.to_json())
    write_text(out["markdown"], render.markdown(doc))
    figures(t, preds, runs, out)
    log.info("report of %d run(s) and %d baseline table(s) -> %s", len(preds), len(base), out["markdown"])
    return t
