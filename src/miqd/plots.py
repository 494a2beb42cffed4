"""Figures a person would rather see than read: distortion statistics and example images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
    fig = quality_distribution(manifest, f"{dataset}: {n} sources, {len(manifest)} distorted images")
    with atomic_path(quality_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    sheet = contact_sheet(manifest, Path(root), manifest["image_id"].iloc[0])
    with atomic_path(examples_png) as tmp:
        sheet.save(tmp, format="PNG")
