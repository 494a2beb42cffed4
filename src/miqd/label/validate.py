"""Label validation (paper §4.3, Table 4): do two disjoint parts of the ensemble agree?

Each trial draws a random partition of the task's models into a part of round(fraction·m) models
and the rest (each part keeps at least one model), recomputes the three MMOS labels from each part
(α renormalised within the part, as the weights are "normalised within the models used") and
compares the two label vectors over every distorted image: SRCC, PLCC (Pearson, no fitted mapping)
and RMSE. The trials are keyed by (seed, task, trial), so the table does not depend on shard count.
Runs on the stored per-model scores of the label tables; it never re-runs inference.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miqd.errors import InputError
from miqd.io import write_table, write_text
from miqd.label.mmos import LABEL_TYPES, mmos, model_weights
from miqd.correlation import plcc, rmse, srcc
from miqd.seeding import rng_for

log = logging.getLogger("miqd.validate")

METRICS = ("srcc", "plcc", "rmse")
TASK_TITLES = {"cls": "Image Classification", "det": "Object Detection", "ins": "Instance Segmentation"}
LABEL_TITLES = {"consistency": "Consistency Score", "accuracy": "Accuracy Score", "composite": "Composite Score"}


def partitions(n_models: int, trials: int, fraction: float, seed: int, task: str) -> list[np.ndarray]:
    """Per trial, the indices of the first part (the rest is the second)."""
    if n_models < 2:
        raise InputError(f"label validation of task {task} needs at least 2 models, the registry has {n_models}")
    k = int(min(max(round(fraction * n_models), 1), n_models - 1))
    return [np.sort(rng_for(seed, "validate", task, t).permutation(n_models)[:k]) for t in range(trials)]


def trials(consistency: np.ndarray, accuracy: np.ndarray, benchmarks: np.ndarray, *, lam: float,
           weights: str, n_trials: int, fraction: float, seed: int, task: str,
           model_ids: list[str]) -> pd.DataFrame:
    """One row per (trial, label type): SRCC, PLCC, RMSE between the two parts' labels."""
    n_models = consistency.shape[1]
    rows = []
    for t, part_a in enumerate(partitions(n_models, n_trials, fraction, seed, task)):
        part_b = np.setdiff1d(np.arange(n_models), part_a)
        labels = []
        for part in (part_a, part_b):
            alpha = model_weights({model_ids[i]: float(benchmarks[i]) for i in part}, weights)
            labels.append(mmos(consistency[:, part], accuracy[:, part], list(alpha.values()), lam))
        for label in LABEL_TYPES:
            a, b = labels[0][label], labels[1][label]
            ok = np.isfinite(a) & np.isfinite(b)
            rows.append({"task": task, "trial": t, "label": label, "srcc": srcc(a[ok], b[ok]),
                         "plcc": plcc(a[ok], b[ok]), "rmse": rmse(a[ok], b[ok]), "images": int(ok.sum()),
                         "part_a": ",".join(model_ids[i] for i in part_a),
                         "part_b": ",".join(model_ids[i] for i in part_b)})
    return pd.DataFrame(rows)


def read_scores(label_paths: list[str], models: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per-model consistency and accuracy matrices (images × models) from the label tables."""
    columns = [f"{kind}/{m['id']}" for kind in ("consistency", "accuracy") for m in models]
    parts = []
    for path in label_paths:
        names = set(pq.read_schema(path).names)
        absent = [c for c in columns if c not in names]
        if absent:
            raise InputError(f"label table {path} has no scores {absent[:3]}; rerun its label job")
        parts.append(pq.read_table(path, columns=columns).to_pandas())
    scores = pd.concat(parts, ignore_index=True)
    m = len(models)
    values = scores[columns].to_numpy(np.float64)
    return values[:, :m], values[:, m:]


def run(task: str, label_paths: list[str], models: list[dict], *, lam: float, weights: str, n_trials: int,
        fraction: float, seed: int, out_path: str) -> pd.DataFrame:
    consistency, accuracy = read_scores(label_paths, models)
    benchmarks = np.array([m["benchmark"] for m in models], np.float64)
    table = trials(consistency, accuracy, benchmarks, lam=lam, weights=weights, n_trials=n_trials,
                   fraction=fraction, seed=seed, task=task, model_ids=[m["id"] for m in models])
    random = [m["id"] for m in models if m.get("random")]
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    write_table(out_path, arrow.replace_schema_metadata({"miqd.random_models": json.dumps(random)}))
    summary = table.groupby("label")[list(METRICS)].mean()
    log.info("validate %s: %d trials over %d models, %d images%s\n%s", task, n_trials, len(models),
             consistency.shape[0], f" (random-weight models {random}: NOT real labels)" if random else "",
             summary.to_string(float_format="%.3f"))
    return table


# ---------------------------------------------------------------------------------------------
# paper Table 4


def table4(trial_tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean and std per label type (rows) and task × metric (columns), in the layout of Table 4."""
    data = pd.concat(trial_tables, ignore_index=True)
    tasks = [t for t in TASK_TITLES if t in set(data["task"])]
    rows = []
    for label in LABEL_TYPES:
        for stat in ("mean", "std"):
            row = {"Metric": LABEL_TITLES[label], "Statistic": "Mean" if stat == "mean" else "Std."}
            for task in tasks:
                part = data[(data["task"] == task) & (data["label"] == label)]
                for metric in METRICS:
                    values = part[metric].to_numpy(np.float64)
                    row[f"{task} {metric.upper()}"] = float(np.mean(values) if stat == "mean" else np.std(values, ddof=1)
                                                           if len(values) > 1 else 0.0)
            rows.append(row)
    return pd.DataFrame(rows)


def table4_markdown(table: pd.DataFrame, notes: list[str]) -> str:
    tasks = [t for t in TASK_TITLES if any(c.startswith(f"{t} ") for c in table.columns)]
    arrows = {"SRCC": "↑", "PLCC": "↑", "RMSE": "↓"}
    head1 = "| Metric | Statistic | " + " | ".join(
        f"{TASK_TITLES[t]} {m.upper()} {arrows[m.upper()]}" for t in tasks for m in METRICS) + " |"
    lines = ["Label validation: 80/20 random partitions of each task's models, labels recomputed from each "
             "part and compared (paper Table 4).", "", head1,
             "|" + "---|" * (2 + len(tasks) * len(METRICS))]
    for row in table.itertuples(index=False):
        values = list(row)
        lines.append("| " + " | ".join([values[0], values[1]] + [f"{v:.3f}" if np.isfinite(v) else "–"
                                                                  for v in values[2:]]) + " |")
    if not np.isfinite(table.iloc[:, 2:].to_numpy(np.float64)).all():
        notes = [*notes, "– = undefined: in some trial one part's labels are constant (no ranking to compare)"]
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_table4(trial_paths: list[str], csv_path: str, md_path: str, plot_path: str) -> pd.DataFrame:
    tables, notes = [], []
    for path in trial_paths:
        tables.append(pq.read_table(path).to_pandas())
        random = json.loads((pq.read_schema(path).metadata or {}).get(b"miqd.random_models", b"[]"))
        if random:
            notes.append(f"{tables[-1]['task'].iloc[0]}: models {', '.join(random)} have random weights; "
                         f"these numbers are NOT real label statistics")
    data = pd.concat(tables, ignore_index=True)
    for task, group in data.groupby("task", sort=False):
        distinct = group["part_a"].nunique()
        if distinct < group["trial"].nunique():
            notes.append(f"{task}: its models allow only {distinct} distinct partition(s), so the trials repeat "
                         f"them and the std says nothing about stability")
    notes.insert(0, f"{data['trial'].nunique()} trials per task; models per part: "
                    + "; ".join(f"{t}: {len(g.part_a.iloc[0].split(','))} + {len(g.part_b.iloc[0].split(','))}"
                                for t, g in data.groupby("task", sort=False)))
    table = table4(tables)
    write_text(csv_path, table.to_csv(index=False, float_format="%.6f"))
    write_text(md_path, table4_markdown(table, notes))
    from miqd.plots import validation_figure

    validation_figure(data, plot_path)
    return table
