"""Tiny stand-ins for what the train stage reads: a pipeline output (label shards + split tables
with real, small distorted photos) and the published MIQD-2.5M layout, plus a fast config."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from miqd import config as cfgmod
from miqd import layout
from miqd.distort.corruptions import get_corruption
from miqd.distort.levels import SeverityScheme
from miqd.io import write_table
from miqd.seeding import rng_for

CORRUPTIONS = ("gaussian_noise", "defocus_blur")
PAIRS = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (4, 1), (1, 4)]
SIZE = (40, 48)  # (H, W) of the fixture images


def distorted_images(photo: np.ndarray, image_id: str):
    """(corruption, roi, bg, image): real corruptions of a small photo; mixed pairs blend halves."""
    levels = {}
    scheme = SeverityScheme("imagenet_c")  # five constants in rising severity, no ranking needed
    for c in CORRUPTIONS:
        corr = get_corruption(c)
        for lv, params in enumerate(scheme.candidates(c), start=1):
            levels[c, lv] = corr.apply(photo, params, rng_for(0, image_id, c, lv), scheme.variant)
    for c in CORRUPTIONS:
        for r, b in PAIRS:
            img = levels[c, r].copy()
            img[:, SIZE[1] // 2:] = levels[c, b][:, SIZE[1] // 2:]  # left half "ROI", right "background"
            yield c, r, b, img


def write_pipeline(outdir: Path, photos: dict[str, np.ndarray], tasks=("cls", "det")) -> None:
    """Label shards and split tables shaped like the label / split stages' (one shard per dataset).

    Labels fall with severity (ROI weighted more), with a little noise: a model can learn them.
    """
    rng = np.random.default_rng(0)
    ids = sorted(photos)
    for task in tasks:
        dataset = layout.TASK_DATASET[task]
        folder = layout.DATASET_FOLDER[dataset]
        rows = []
        for image_id in ids:
            for c, r, b, img in distorted_images(photos[image_id], image_id):
                rel = layout.distorted_relpath(dataset, image_id, c, r, b)
                path = outdir / rel
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(path)
                sev = 0.7 * r + 0.3 * b
                cons = float(np.clip(1.1 - 0.2 * sev + rng.normal(0, 0.03), 0, 1))
                acc = float(np.clip(1.0 - 0.15 * sev + rng.normal(0, 0.03), 0, 1))
                diff = img.astype(float) - photos[image_id].astype(float)
                psnr = 10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-9))
                rows.append({"image_id": image_id, "corruption": c, "roi_level": r, "bg_level": b,
                             "region_type": layout.region_type(r, b), "path": rel, "psnr": psnr,
                             "ssim": float(1 - np.abs(diff).mean() / 255 - rng.uniform(0, 0.02)),
                             "consistency": cons, "accuracy": acc, "composite": 0.5 * cons + 0.5 * acc,
                             f"consistency/m{task}": cons, f"accuracy/m{task}": acc})
        write_table(layout.label_table(str(outdir), task, "000"), pd.DataFrame(rows))
        src = []
        for image_id in ids:
            p = outdir / folder / "src_images" / f"{image_id}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photos[image_id]).save(p)
            src.append(str(p))
        split = pd.DataFrame({"image_id": ids, "split": ["train"] * (len(ids) - 1) + ["val"], "path": src,
                              "class_index": [1] * len(ids), "categories": [None] * len(ids)})
        write_table(layout.split_table(str(outdir), dataset), split)


def tiny_photos(demo_images: dict, n: int = 4) -> dict[str, np.ndarray]:
    names = sorted(demo_images)[:n]
    out = {}
    for k, name in enumerate(names):
        img = demo_images[name]
        h, w = img.shape[:2]
        crop = img[h // 4: h // 4 + 4 * SIZE[0], w // 4: w // 4 + 4 * SIZE[1]]
        out[f"src_{k}"] = np.asarray(Image.fromarray(crop).resize(SIZE[::-1], Image.BILINEAR))
    return out


def region_checkpoint(path: Path, arch: str = "tf_efficientnet_lite0") -> dict:
    """A random-init region encoder saved as a file: loaded through the real weights code."""
    import timm

    torch.manual_seed(1)
    model = timm.create_model(arch, pretrained=False)
    torch.save(model.state_dict(), path)
    return {"file": str(path)}


def train_config(outdir: Path, region_weights: dict, runs=None, **train) -> dict:
    """A validated config: the fixture's data, tiny crops, a handful of steps."""
    cfg = {
        "outdir": str(outdir),
        "seed": 0,
        "sources": {
            "imagenet": {"images": str(outdir / "src"), "ground_truth": "resources/demo/imagenet/ground_truth.txt",
                         "shards": 1},
            "coco": {"images": str(outdir / "src"), "annotations": "resources/demo/coco/instances_demo.json",
                     "shards": 1},
        },
        "train": {
            "runs": runs or [{"model": "ra_miqa", "task": "cls", "label": "composite"}],
            "models": {"ra_miqa": {"weights": "random"}, "resnet18": {"weights": "random"}},
            "region_encoder": {"arch": "tf_efficientnet_lite0", "weights": region_weights, "size": 32},
            "epochs": 2, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0.25, "resize": 36, "crop": 32,
            "samples_per_epoch": None, "val_samples": 16, "checkpoint_every": 2, "log_every": 1,
            "device": "cpu", "precision": "fp32", "workers": 0, "threads": 1,
        },
        "evaluate": {"tasks": ["cls", "det"], "batch_size": 16, "workers": 0, "device": "cpu", "threads": 1},
    }
    cfg["train"].update(train)
    return cfgmod.validate(copy.deepcopy(cfg), whole_workflow=False)


def write_published(root: Path, photos: dict[str, np.ndarray], flat: bool = False) -> dict[str, list[str]]:
    """The published MIQD-2.5M layout: images/, labels/, src_images/ and the upstream split CSVs.

    cls ids have underscores (ILSVRC2012_val_...), corruptions too (gaussian_noise); det/ins ids
    are 12-digit COCO ids; ins labels live in miqa_ins/labels while images stay in miqa_det.
    Images sit in per-source folders `images/<id>/` (as the database's README shows them), or with
    `flat` all in `images/`.
    """
    cls_ids = [f"ILSVRC2012_val_{k + 1:08d}" for k in range(len(photos))]
    det_ids = [f"{k + 7:012d}" for k in range(len(photos))]
    for ids, folder in ((cls_ids, "miqa_cls"), (det_ids, "miqa_det")):
        for image_id, photo in zip(ids, photos.values(), strict=True):
            src = root / folder / "src_images" / f"{image_id}{'.JPEG' if folder == 'miqa_cls' else '.jpg'}"
            src.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo).save(src, format="JPEG", quality=95)
            names, cons, acc = [], [], []
            for c, r, b, img in distorted_images(photo, image_id):
                # the MIQD-2.5M generator's names, written out independently of miqd.layout
                name = (f"{image_id}_{c}_{r}.png" if r == b else
                        f"{image_id}_{c}_{'fg' if r > b else 'bg'}_stronger_fg{r}_bg{b}.png")
                p = root / folder / "images" / ("" if flat else image_id) / name
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p)
                names.append(name)
                cons.append(round(1 - 0.1 * r, 4))
                acc.append(round(1 - 0.05 * b - 0.1 * r, 4))
            if folder == "miqa_cls":
                lab = root / folder / "labels" / f"{image_id}_mmos.csv"
                lab.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"dist_images": names, "weighted_consistency": cons, "weighted_accuracy": acc,
                              "mean_consistency": cons, "std_accuracy": 0.0}).to_csv(lab, index=False)
            else:
                for sub, scale in (("miqa_det", 1.0), ("miqa_ins", 0.9)):
                    lab = root / sub / "labels"
                    lab.mkdir(parents=True, exist_ok=True)
                    # rows in another order per file: they are matched by filename
                    pd.DataFrame({"filename": names, "AP_weighted_avg": np.round(np.array(acc) * scale, 4)}) \
                        .to_csv(lab / f"{image_id}_accuracy.csv", index=False)
                    cons_rev = np.round(np.array(cons[::-1]) * scale, 4)
                    pd.DataFrame({"filename": names[::-1], "AP_weighted_avg": cons_rev}) \
                        .to_csv(lab / f"{image_id}_consistency.csv", index=False)
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Image Name": [f"{i}.JPEG" for i in cls_ids[:-1]], "Category": "x", "Quality Score": 0.5}) \
        .to_csv(splits / "miqa_cls_train.csv", index=False)
    pd.DataFrame({"Image Name": [f"{cls_ids[-1]}.JPEG"], "Category": "x", "Quality Score": 0.5}) \
        .to_csv(splits / "miqa_cls_val.csv", index=False)
    pd.DataFrame({"Image Index": [int(i) for i in det_ids[:-1]]}).to_csv(splits / "miqa_det_train.csv", index=False)
    pd.DataFrame({"Image Index": [int(det_ids[-1])]}).to_csv(splits / "miqa_det_val.csv", index=False)
    return {"cls": cls_ids, "det": det_ids}
