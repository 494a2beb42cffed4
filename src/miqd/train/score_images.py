"""`miqd score`: a trained quality model on an image or a folder of images.

The model is a `miqd train` model.pt or a published MIQA checkpoint (RA-MIQA or a baseline),
recognised by its keys (miqd.train.checkpoints).

Each image gets the evaluation preprocessing the model was validated with (short side resized,
centre crop; the region encoder's centre crop for RA-MIQA) and one score; higher means the image
serves the task's vision models better (the MMOS scale the model learnt, about 0-1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from miqd.errors import InputError
from miqd.io import atomic_path, read_image, write_text

log = logging.getLogger("miqd.score")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def image_paths(path: str | Path, recursive: bool = False) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise InputError(f"{path} does not exist; give an image file or a folder of images")
    found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir())
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                         + ("" if recursive else "; --recursive looks into subfolders"))
    return found


def score_images(checkpoint: str, paths: list[Path], device: str = "cpu", batch_size: int = 16,
                 trust_pickle: bool = False) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """One row per readable image: path, score, and what the model is (task, label, model); and
    (path, reason) of every image that could not be read, which is skipped."""
    import torch

    from miqd.train.networks import load_quality_model
    from miqd.train.networks import model_def
    from miqd.train.transforms import Preprocess

    model, ckpt = load_quality_model(checkpoint, device, trust_pickle)
    s = ckpt["settings"]
    if "random" in ckpt["backbone_init"].lower():
        log.warning("%s: the backbone was trained from a seeded random initialisation (the embedded demo); "
                    "its scores demonstrate the method, they are not the paper's model", checkpoint)
    prep = Preprocess(s["resize"], s["crop"], s["region_size"] if model_def(s["model"]).region else None)
    scores, scored, failed = [], [], []
    for start in range(0, len(paths), batch_size):
        crops, regions = [], []
        for p in paths[start:start + batch_size]:
            try:
                crop, region = prep(read_image(p))
            except InputError as err:
                failed.append((p, str(err)))
                continue
            scored.append(p)
            crops.append(torch.from_numpy(crop))
            if region is not None:
                regions.append(torch.from_numpy(region))
        if not crops:
            continue
        with torch.inference_mode():
            x = torch.stack(crops).to(device)
            r = torch.stack(regions).to(device) if regions else None
            scores.append(model(x, r).float().cpu().numpy())
    df = pd.DataFrame({"path": [str(p) for p in scored],
                       "score": np.concatenate(scores).astype(np.float64) if scores else np.zeros(0),
                       "model": ckpt["model"], "task": ckpt["task"], "label": ckpt["label"]})
    return df, failed


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.6f")
    if fmt == "json":
        return json.dumps(df.assign(score=df["score"].round(6)).to_dict(orient="records"), indent=1) + "\n"
    if df.empty:
        return ""
    width = max(len("path"), *(len(p) for p in df["path"]))
    lines = [f"{'path':<{width}}  score", f"{'-' * width}  --------"]
    lines += [f"{p:<{width}}  {s:8.4f}" for p, s in zip(df["path"], df["score"], strict=True)]
    task, label, model = df.iloc[0][["task", "label", "model"]]
    lines.append(f"({model}, {label} score for task {task}; higher = better for the task's models)")
    return "\n".join(lines) + "\n"


def annotate(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """A copy of each image with its score written in the top-left corner, as PNG."""
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    written = []
    for path, score in zip(df["path"], df["score"], strict=True):
        img = Image.fromarray(read_image(path))
        draw = ImageDraw.Draw(img)
        text = f"{df.iloc[0]['label']} {score:.3f}"
        size = max(12, img.height // 20)
        try:
            from PIL import ImageFont

            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1 has one fixed-size default font
            from PIL import ImageFont

            font = ImageFont.load_default()
        box = draw.textbbox((4, 4), text, font=font)
        draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
        draw.text((4, 4), text, fill=(255, 255, 255), font=font)
        target = out_dir / f"{Path(path).stem}.score.png"
        with atomic_path(target) as tmp:
            img.save(tmp, format="PNG")
        written.append(target)
    return written


def run(path: str, checkpoint: str, fmt: str = "table", out: str | None = None, annotate_dir: str | None = None,
        recursive: bool = False, device: str = "cpu", batch_size: int = 16,
        skip_errors: bool = False, trust_pickle: bool = False) -> pd.DataFrame:
    """Score every readable image; an unreadable one is listed and, unless `skip_errors`, makes the
    command fail after the others are scored and written."""
    paths = image_paths(path, recursive)
    df, failed = score_images(checkpoint, paths, device, batch_size, trust_pickle)
    text = render(df, fmt)
    if out:
        write_text(out, text)
    else:
        print(text, end="")
    if annotate_dir:
        annotate(df, annotate_dir)
    if failed:
        listing = "\n  ".join(f"{p}: {why}" for p, why in failed)
        message = f"{len(failed)} of {len(paths)} images could not be read and were not scored:\n  {listing}"
        if not skip_errors:
            raise InputError(message + "\n(--skip-errors scores the rest and exits 0)")
        log.warning(message)
    return df
