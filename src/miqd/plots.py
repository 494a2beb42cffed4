"""Figures a person would rather see than read: distortion statistics, example images, labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from miqd import layout  # noqa: E402
from miqd.io import atomic_path, read_table  # noqa: E402

REGION_COLOURS = {"UD": "#4C72B0", "ROI-DD": "#DD8452", "BG-DD": "#55A868"}


def quality_distribution(manifest: pd.DataFrame, title: str) -> plt.Figure:
    """PSNR and SSIM per corruption and region type (the paper's Fig. 5, split by region)."""
    corruptions = list(dict.fromkeys(manifest["corruption"]))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(corruptions)), 7), sharex=True)
    width = 0.8 / len(REGION_COLOURS)
    for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
        for k, (region, colour) in enumerate(REGION_COLOURS.items()):
            data = [manifest.loc[(manifest.corruption == c) & (manifest.region_type == region), metric]
                    .replace([np.inf], np.nan).dropna().to_numpy() for c in corruptions]
            pos = np.arange(len(corruptions)) + (k - 1) * width
            parts = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                               showfliers=False, manage_ticks=False)
            for box in parts["boxes"]:
                box.set_facecolor(colour)
                box.set_alpha(0.8)
            ax.plot([], [], color=colour, lw=6, label=region)
        ax.set_ylabel(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=3, loc="upper right", fontsize=8)
    axes[0].set_title(title)
    axes[1].set_xticks(np.arange(len(corruptions)), corruptions, rotation=30, ha="right")
    fig.tight_layout()
    return fig


def contact_sheet(manifest: pd.DataFrame, root: Path, image_id: str, thumb: int = 128) -> Image.Image:
    """One source: a row per corruption, columns UD 1-5 then ROI-DD (5,1) and BG-DD (1,5)."""
    rows = manifest[manifest.image_id == image_id]
    corruptions = list(dict.fromkeys(rows["corruption"]))
    pairs = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (5, 1), (1, 5)]
    with Image.open(root / rows.iloc[0]["path"]) as first:
        scale = thumb / max(first.size)
        w, h = max(1, round(first.width * scale)), max(1, round(first.height * scale))
    left, top = 110, 18
    sheet = Image.new("RGB", (left + w * len(pairs), top + h * len(corruptions)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (r, b) in enumerate(pairs):
        label = f"UD {r}" if r == b else f"{layout.region_type(r, b)} ({r},{b})"
        draw.text((left + j * w + 4, 3), label, fill="black")
    for i, corruption in enumerate(corruptions):
        draw.text((4, top + i * h + h // 2 - 6), corruption, fill="black")
        for j, (r, b) in enumerate(pairs):
            match = rows[(rows.corruption == corruption) & (rows.roi_level == r) & (rows.bg_level == b)]
            if len(match):
                with Image.open(root / match.iloc[0]["path"]) as im:
                    sheet.paste(im.convert("RGB").resize((w, h), Image.BILINEAR), (left + j * w, top + i * h))
    return sheet


def distort_figures(manifest_path: str, root: str, quality_png: str, examples_png: str) -> None:
    manifest = read_table(manifest_path)
    dataset = Path(manifest_path).stem
    n = manifest["image_id"].nunique()
    save_figure(quality_distribution(manifest, f"{dataset}: {n} sources, {len(manifest)} distorted images"),
                quality_png)
    sheet = contact_sheet(manifest, Path(root), manifest["image_id"].iloc[0])
    with atomic_path(examples_png) as tmp:
        sheet.save(tmp, format="PNG")


def save_figure(fig: plt.Figure, path: str, dpi: int = 110) -> None:
    """Write a figure atomically, without a timestamp, so reruns give the same bytes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)


TASK_TITLES = {"cls": "Image classification", "det": "Object detection", "ins": "Instance segmentation"}
LABEL_COLOURS = {"consistency": "#4C72B0", "accuracy": "#DD8452", "composite": "#55A868"}
# Blues without its near-white end, so that a hexagon of one image still shows
DENSITY_CMAP = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.25, 1.0, 256)), name="density_blues")


def validation_figure(trials: pd.DataFrame, path: str) -> None:
    """Per-trial SRCC / PLCC / RMSE of label validation, per task and label type (Table 4's spread)."""
    tasks = [t for t in TASK_TITLES if t in set(trials["task"])]
    metrics = ("srcc", "plcc", "rmse")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    labels = list(LABEL_COLOURS)
    width = 0.8 / len(labels)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, label in enumerate(labels):
            data = [trials.loc[(trials.task == t) & (trials.label == label), metric].dropna().to_numpy()
                    for t in tasks]
            pos = np.arange(len(tasks)) + (k - 1) * width
            parts = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, manage_ticks=False)
            for box in parts["boxes"]:
                box.set_facecolor(LABEL_COLOURS[label])
                box.set_alpha(0.8)
            ax.plot([], [], color=LABEL_COLOURS[label], lw=6, label=label)
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.set_title(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Label validation: {trials['trial'].nunique()} random 80/20 partitions of the models")
    fig.tight_layout()
    save_figure(fig, path)


def label_density_figure(labels: dict[str, pd.DataFrame], path: str) -> None:
    """Consistency vs accuracy density per task (paper Fig. 4), each panel with its colour bar:
    the counts differ by task, so one shared scale would flatten the smaller ones."""
    fig, axes = plt.subplots(1, len(labels), figsize=(4.9 * len(labels), 4), squeeze=False)
    for ax, (task, table) in zip(axes[0], labels.items(), strict=True):
        ok = table["consistency"].notna() & table["accuracy"].notna()
        hexes = ax.hexbin(table.loc[ok, "consistency"], table.loc[ok, "accuracy"], gridsize=25,
                          extent=(0, 1, 0, 1), cmap=DENSITY_CMAP, bins="log", mincnt=1)
        counts = hexes.get_array()
        hexes.set_clim(1, max(float(counts.max()) if counts is not None and counts.size else 1.0, 2.0))
        fig.colorbar(hexes, ax=ax, label="images per hexagon (log scale)",
                     ticks=LogLocator(subs=(1.0, 2.0, 5.0)), format=FormatStrFormatter("%g"))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("consistency (MMOS)")
        ax.set_ylabel("accuracy (MMOS)")
        n = int(ok.sum())
        ax.set_title(f"{TASK_TITLES.get(task, task)} ({n} image{'' if n == 1 else 's'})")
    fig.tight_layout()
    save_figure(fig, path)


def mmos_heatmap_figure(table: pd.DataFrame, task: str, path: str) -> None:
    """Mean MMOS over (ROI level, background level) per corruption and label type (paper Fig. 6)."""
    corruptions = list(dict.fromkeys(table["corruption"]))
    kinds = list(LABEL_COLOURS)
    fig, axes = plt.subplots(len(kinds), len(corruptions), figsize=(1.55 * len(corruptions) + 1, 1.6 * len(kinds) + 0.8),
                             squeeze=False)
    for i, kind in enumerate(kinds):
        for j, corruption in enumerate(corruptions):
            part = table[table.corruption == corruption]
            grid = part.pivot_table(index="bg_level", columns="roi_level", values=kind, aggfunc="mean")
            grid = grid.reindex(index=range(5, 0, -1), columns=range(1, 6))
            ax = axes[i][j]
            image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(5), range(1, 6), fontsize=6)
            ax.set_yticks(range(5), range(5, 0, -1), fontsize=6)
            if i == 0:
                ax.set_title(corruption, fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{kind}\nbackground level", fontsize=7)
            if i == len(kinds) - 1:
                ax.set_xlabel("ROI level", fontsize=7)
    fig.suptitle(f"{TASK_TITLES.get(task, task)}: mean MMOS by (ROI, background) distortion level")
    fig.tight_layout(rect=(0, 0, 0.94, 1))
    fig.colorbar(image, cax=fig.add_axes((0.95, 0.15, 0.01, 0.7)), label="mean label")
    save_figure(fig, path)


def label_agreement_figure(joined: dict[str, pd.DataFrame], table: pd.DataFrame, path: str) -> None:
    """Our labels (x) against the published ones (y), one row per task, one column per label type."""
    labels = ("consistency", "accuracy", "composite")
    fig, axes = plt.subplots(len(joined), 3, figsize=(12, 3.8 * len(joined)), squeeze=False)
    for row, (task, frame) in zip(axes, joined.items(), strict=True):
        for ax, label in zip(row, labels, strict=True):
            for region, colour in REGION_COLOURS.items():
                part = frame[frame["region_type"] == region]
                ax.scatter(part[label], part[f"published_{label}"], s=4, alpha=0.4, color=colour, label=region,
                           rasterized=True)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            r = table[(table.task == task) & (table.label == label) & (table.by == "all")].iloc[0]
            ax.set_title(f"{TASK_TITLES.get(task, task)}: {label}\nSRCC {r.srcc:.3f}  PLCC {r.plcc:.3f}  "
                         f"({int(r.n)} images)", fontsize=9)
            ax.set_xlabel("regenerated (miqd)")
            ax.set_ylabel("published")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    save_figure(fig, path)
