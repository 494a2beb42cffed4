"""The evaluation's figures: cross-task (Fig. 8) and severity (Fig. 9) heatmaps, predictions vs labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from miqd.correlation import fit_logistic5, logistic5
from miqd.evaluation.render import cell
from miqd.evaluation.tables import MIN_GROUP
from miqd.train import files


def _heatmap(ax, matrix: pd.DataFrame, title: str, vmin: float = 0.0, vmax: float = 1.0):
    im = ax.imshow(matrix.to_numpy(np.float64), vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix.iat[i, j]
            ax.text(j, i, cell(v), ha="center", va="center", color="white" if not np.isnan(v) and v < 0.6 else "black",
                    fontsize=8)
    ax.set_title(title, fontsize=9)
    return im


def _panels(keys: list, draw, path: str) -> None:
    """One row of panels, one per key; `draw(ax, key)` returns False for a panel with nothing in it."""
    from miqd.plots import plt, save_figure  # noqa: I001 - miqd.plots selects the Agg backend

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        if draw(ax, key) is False:
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def _heatmap_panel(frame: pd.DataFrame, rows_of, axes: tuple[str, str, str], labels: tuple[str, str], title):
    """A panel drawer for `_panels`: the rows `rows_of(key)` of `frame` pivoted to (index, columns,
    values) = `axes`, titled `title(key)`, with (x, y) axis `labels`; False where there are none."""
    def draw(ax, key):
        part = frame[rows_of(key)]
        if part.empty:
            return False
        index, columns, values = axes
        m = part.pivot_table(index=index, columns=columns, values=values, aggfunc="first", dropna=False)
        _heatmap(ax, m, title(key))
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        return True

    return draw


def _cross_task_panel(cross: pd.DataFrame):
    return _heatmap_panel(cross, lambda k: (cross["method"] == k[0]) & (cross["label"] == k[1]),
                          ("train_task", "test_task", "srcc"), ("test task", "training task"),
                          lambda k: f"{k[0]} ({k[1]}): SRCC")


def _severity_panel(sev: pd.DataFrame):
    return _heatmap_panel(sev, lambda run: sev["run"] == run, ("roi_level", "bg_level", "plcc"),
                          ("background level", "ROI level"), lambda run: f"{run}: PLCC")


def _scatter_panel(preds: dict[str, pd.DataFrame]):
    def draw(ax, run):
        if run is None:
            return False
        df = preds[files.run_name(run)]
        df = df[df["task"] == run["task"]]
        x, y = df["pred"].to_numpy(), df[run["label"]].to_numpy()
        ax.scatter(x, y, s=4, alpha=0.4)
        if len(x) >= MIN_GROUP and np.ptp(x) > 0:
            q = np.linspace(x.min(), x.max(), 200)
            ax.plot(q, logistic5(q, *fit_logistic5(x, y)), color="#DD8452", label="logistic fit (eq. 14)")
            ax.legend(fontsize=7)
        ax.set_xlabel("predicted score")
        ax.set_ylabel(f"{run['label']} label")
        ax.set_title(f"{files.run_name(run)} on {run['task']} val", fontsize=9)
        return True

    return draw


def figures(t: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame], runs: list[dict], out: dict) -> None:
    """The three PNGs of `out` (cross_task_png, severity_png, scatter_png); a blank one where nothing ran."""
    cross, sev = t["cross_task"], t["severity"]
    _panels(list(dict.fromkeys(zip(cross["method"], cross["label"], strict=True))) or [("none", "composite")],
            _cross_task_panel(cross), out["cross_task_png"])
    _panels(list(dict.fromkeys(sev["run"])) or ["none"], _severity_panel(sev), out["severity_png"])
    _panels([r for r in runs if files.run_name(r) in preds] or [None], _scatter_panel(preds), out["scatter_png"])
