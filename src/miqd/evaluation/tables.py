"""The evaluation's tables as data: long format (one row per method x group) and the paper's layout.

Conventions: SRCC and KRCC on the raw scores; PLCC and RMSE after the 5-parameter logistic
mapping (eq. 14) fitted within each evaluated group (a task, a region type, a corruption, a
severity pair); groups with fewer than `MIN_GROUP` images are reported as NaN. Baselines where
lower means better (LPIPS, DISTS) were negated by the scoring stage, so that every correlation
reads the same way.

Everything here is a function of DataFrames: the stage that reads and writes files is `stage`,
the formatting of cells (Markdown and HTML alike) is `render`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from miqd import layout
from miqd.correlation import correlations
from miqd.errors import InputError
from miqd.train import files
from miqd.train.data import LABELS
from miqd.train.networks import model_def

MIN_GROUP = 5
HVS_ALWAYS = ("psnr", "ssim")
HVS_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "vsi": "VSI", "lpips": "LPIPS", "dists": "DISTS",
             "hyperiqa": "HyperIQA", "maniqa": "MANIQA"}
REGIONS = ("UD", "ROI-DD", "BG-DD")
# Table 8's column order; corruptions it does not name follow in name order
PAPER_CORRUPTIONS = ("contrast", "darkness", "pixelate", "jpeg_compression", "motion_blur", "defocus_blur",
                     "glass_blur", "fog", "snow", "gaussian_noise")
# the columns every scored frame (predictions, baselines) carries besides its scores
KEEP = ["task", "image_id", "corruption", "roi_level", "bg_level", "region_type", *LABELS, "psnr", "ssim"]
METRIC_COLUMNS = ["n", "srcc", "plcc", "krcc", "rmse"]


def metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """n, SRCC, PLCC, KRCC, RMSE of one group; NaN where undefined (too few images, constant scores)."""
    n = int(len(pred))
    if n < MIN_GROUP or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return {"n": n, "srcc": np.nan, "plcc": np.nan, "krcc": np.nan,
                "rmse": float(np.sqrt(np.mean((pred - target) ** 2))) if n and np.ptp(pred) == 0 else np.nan}
    c = correlations(pred, target, fit=True)
    return {"n": n, "srcc": c["srcc"], "plcc": c["plcc"], "krcc": c["krcc"], "rmse": c["rmse"]}


# ---------------------------------------------------------------------------------------------
# long format


def _methods(runs: list[dict], base: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame]):
    """(method name, kind, {test task: (scores frame, score column)}, run or None)."""
    out = []
    extra = [c for df in base.values() for c in df.columns if c not in KEEP and c != "path"]
    hvs = list(dict.fromkeys([*HVS_ALWAYS, *extra]))
    for name in hvs:
        out.append((HVS_NAMES.get(name, name), "HVS-based",
                    {t: (df, name) for t, df in base.items() if name in df}, None))
    for run in runs:
        rn = files.run_name(run)
        if rn not in preds:
            continue
        df = preds[rn]
        own = df[df["task"] == run["task"]]
        out.append((model_def(run["model"]).paper_name, "Machine-based", {run["task"]: (own, "pred")}, run))
    return out


def _row(frames: dict, task: str, label: str, select=None) -> dict:
    df, col = frames[task]
    if select is not None:
        df = df[select(df)]
    return metrics(df[col].to_numpy(np.float64), df[label].to_numpy(np.float64))


def _corruptions(df: pd.DataFrame) -> list[str]:
    names = set(df["corruption"])
    return [c for c in PAPER_CORRUPTIONS if c in names] + sorted(names - set(PAPER_CORRUPTIONS))


def _method_rows(name: str, kind: str, frames: dict, run: dict | None) -> dict[str, list[dict]]:
    """One method's rows of tables 5-8 and of the severity pairs."""
    out: dict[str, list[dict]] = {"table5": [], "table6": [], "table7": [], "table8": [], "severity": []}
    for task in frames:
        for label in LABELS if run is None else (run["label"],):
            rec = {"method": name, "category": kind, "task": task, "label": label}
            if label == "composite":
                out["table5"].append(rec | _row(frames, task, label))
                for region in REGIONS:
                    out["table7"].append(rec | {"region_type": region}
                                         | _row(frames, task, label, lambda d, r=region: d["region_type"] == r))
                if run is not None:
                    for c in _corruptions(frames[task][0]):
                        out["table8"].append(rec | {"corruption": c}
                                             | _row(frames, task, label, lambda d, c=c: d["corruption"] == c))
            else:
                out["table6"].append(rec | _row(frames, task, label))
            if run is not None:
                for (r, b), _ in frames[task][0].groupby(["roi_level", "bg_level"]):
                    out["severity"].append(
                        rec | {"run": files.run_name(run), "region_type": layout.region_type(r, b),
                               "roi_level": r, "bg_level": b}
                        | _row(frames, task, label, lambda d, r=r, b=b: (d["roi_level"] == r) & (d["bg_level"] == b)))
    return out


def _cross_rows(runs: list[dict], preds: dict[str, pd.DataFrame]) -> list[dict]:
    """Every run on every task it was evaluated on (Fig. 8)."""
    cross = []
    for run in runs:
        rn = files.run_name(run)
        if rn not in preds:
            continue
        df = preds[rn]
        for task in dict.fromkeys(df["task"]):
            part = df[df["task"] == task]
            cross.append({"method": model_def(run["model"]).paper_name, "run": rn, "label": run["label"],
                          "train_task": run["task"], "test_task": task}
                         | metrics(part["pred"].to_numpy(), part[run["label"]].to_numpy()))
    return cross


def tables(runs: list[dict], base: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Long-format tables 5-8, severity pairs (Fig. 9) and cross-task (Fig. 8)."""
    rows: dict[str, list[dict]] = {k: [] for k in ("table5", "table6", "table7", "table8", "severity")}
    for method in _methods(runs, base, preds):
        for key, part in _method_rows(*method).items():
            rows[key] += part
    frame = lambda rows, keys: pd.DataFrame(rows, columns=keys + METRIC_COLUMNS)  # noqa: E731
    base_keys = ["method", "category", "task", "label"]
    return {
        "table5": frame(rows["table5"], base_keys),
        "table6": frame(rows["table6"], base_keys),
        "table7": frame(rows["table7"], base_keys + ["region_type"]),
        "table8": frame(rows["table8"], base_keys + ["corruption"]),
        "severity": frame(rows["severity"], base_keys + ["run", "region_type", "roi_level", "bg_level"]),
        "cross_task": frame(_cross_rows(runs, preds), ["method", "run", "label", "train_task", "test_task"]),
    }


# ---------------------------------------------------------------------------------------------
# tables as data, in the paper's layout


def _cell(v):
    """A JSON-ready cell: None for a missing value, Python int / float / str otherwise."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return None if v is None else str(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return str(v)


@dataclass(frozen=True)
class Table:
    """A table as data: header `columns`, `rows` of cells (str, int, float, or None for missing);
    the first `keys` columns name the row; floats are shown with `digits` decimals."""

    columns: list[str]
    rows: list[list]
    keys: int = 0
    digits: int = 4

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, keys: int | None = None, digits: int = 4) -> Table:
        """`keys` defaults to the leading columns that hold text."""
        if keys is None:
            keys = next((k for k, c in enumerate(frame.columns) if pd.api.types.is_numeric_dtype(frame[c])),
                        len(frame.columns))
        rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return cls([str(c) for c in frame.columns], rows, keys, digits)


@dataclass(frozen=True)
class Figure:
    """A PNG beside the report (`file`: its name there) and what it shows."""

    file: str
    caption: str


@dataclass(frozen=True)
class Section:
    """A titled part of the report: a table (or `empty`, said when it has no rows) and/or a figure."""

    id: str
    title: str
    table: Table | None = None
    empty: str = ""
    figure: Figure | None = None


@dataclass(frozen=True)
class Document:
    """The whole evaluation report: notes on the data and runs, the conventions, the sections."""

    title: str
    notes: list[str]
    conventions: str
    sections: list[Section] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Document:
        """The document `to_json` wrote; `source` names the file in errors."""
        try:
            data = json.loads(text)
            sections = [Section(s["id"], s["title"], Table(**s["table"]) if s.get("table") else None,
                                s.get("empty", ""), Figure(**s["figure"]) if s.get("figure") else None)
                        for s in data["sections"]]
            return cls(data["title"], list(data["notes"]), data["conventions"], sections)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{source} is not an evaluation report written by `miqd evaluate --report` "
                             f"({type(err).__name__}: {err}); rerun that step") from None


def wide_table(long: pd.DataFrame, index: list[str], columns: list[str], metrics: list[str]) -> Table | None:
    """Rows `index`, columns `columns` x `metrics`, both in order of first appearance; None if empty."""
    if long.empty:
        return None
    wide = long.set_index(index + columns)[metrics].unstack(columns)
    wide = wide.reorder_levels(list(range(1, len(columns) + 1)) + [0], axis=1)
    cols = [tuple(c) for c in long[columns].drop_duplicates().itertuples(index=False)]
    rows = list(dict.fromkeys(long[index].itertuples(index=False, name=None)))
    wide = wide.loc[rows if len(index) > 1 else [r[0] for r in rows], [(*c, m) for c in cols for m in metrics]]
    headers = [" ".join([*map(str, c[:-1]), c[-1].upper()]) for c in wide.columns]
    body = [[_cell(k) for k in (key if isinstance(key, tuple) else (key,))] + [_cell(v) for v in row]
            for key, row in zip(wide.index, wide.to_numpy().tolist(), strict=True)]
    return Table(list(index) + headers, body, keys=len(index))


FIGURE_CAPTIONS = {
    "severity": "PLCC of each run on its own task's validation images per (ROI level, background level) "
                "pair, one panel per run (paper Fig. 9); – = undefined.",
    "cross_task": "SRCC of each run on every evaluated task's validation images; rows: the task it was "
                  "trained on, columns: the task it is tested on; one panel per model and label (paper Fig. 8).",
    "scatter": "Each run's predicted score against its label on its own task's validation images, with "
               "the 5-parameter logistic fit (eq. 14) that PLCC and RMSE are computed after.",
}


def document(t: dict[str, pd.DataFrame], notes: list[str], figure_files: dict[str, str]) -> Document:
    """The report in the paper's layout; `figure_files`: {severity, cross_task, scatter: PNG file name}."""
    sev = t["severity"].sort_values(["bg_level", "roi_level"], kind="stable")
    fig = lambda key: Figure(figure_files[key], FIGURE_CAPTIONS[key])  # noqa: E731
    empty = "(no runs with this label)"
    sections = [
        Section("table5", "Table 5: composite score",
                wide_table(t["table5"], ["category", "method"], ["task"], ["srcc", "plcc", "krcc", "rmse"]), empty),
        Section("table6", "Table 6: accuracy and consistency scores",
                wide_table(t["table6"], ["method"], ["task", "label"], ["srcc", "plcc", "rmse"]), empty),
        Section("table7", "Table 7: degradation regions (composite)",
                wide_table(t["table7"], ["category", "method"], ["task", "region_type"], ["srcc", "plcc"]), empty),
        Section("table8", "Table 8: degradation types (composite)",
                wide_table(t["table8"], ["task", "method"], ["corruption"], ["srcc", "plcc"]), empty),
        Section("severity", "Fig. 9: PLCC per severity pair (ROI level, background level)",
                wide_table(sev, ["run", "roi_level"], ["bg_level"], ["plcc"]), empty, fig("severity")),
        Section("cross_task", "Fig. 8: cross-task generalisation (rows: training task; columns: test task)",
                wide_table(t["cross_task"], ["run", "train_task"], ["test_task"], ["srcc", "plcc"]), empty,
                fig("cross_task")),
        Section("scatter", "Predicted scores against labels", figure=fig("scatter")),
    ]
    conventions = ("SRCC and KRCC on the raw scores; PLCC and RMSE after the 5-parameter logistic mapping "
                   "(eq. 14) fitted within each group; – = undefined (constant scores or labels, or fewer "
                   f"than {MIN_GROUP} images).")
    return Document("Evaluation (paper §6, Tables 5-8, Figs. 8-9)", list(notes), conventions, sections)
