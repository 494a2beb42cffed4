"""Throughput of the select stage's NR-IQA scoring and of co-segmentation, on CPU and GPU.

    python benchmarks/select_roi.py [--device auto|cpu|cuda] [--images 4] [--sets 2]
                                    [--metrics piqe hyperiqa maniqa] [--threads 2]

Real photos (the embedded demo's, resized to ImageNet's usual 500x375) and the real code paths:
each learned metric and the ViT are built with random weights, saved to a temporary file and
loaded through the same loader as real checkpoints (speed does not depend on the values).
Scoring: images/s per metric at batch size --batch (same-size images batched, as the stage does).
Co-segmentation: class sets of 5 images with DINO ViT-S/8 at stride 4, load size 224 (the
full-scale settings), timed per step: ViT features, clustering + voting, GrabCut at 500x375.
With --device auto both CPU and (when present) CUDA are measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def photos(n: int) -> list[np.ndarray]:
    from PIL import Image

    from miqd.sources import materialize_demo

    with tempfile.TemporaryDirectory() as d:
        paths = materialize_demo(REPO / "resources/demo/imagenet/sources.yaml", d)
        ims = [np.asarray(Image.open(p).convert("RGB").resize((500, 375), Image.LANCZOS)) for p in paths]
    return [ims[i % len(ims)] for i in range(n)]


def random_checkpoint(name: str, folder: Path) -> dict | None:
    import pyiqa
    import torch

    from miqd import nriqa

    if not nriqa.metric_info(name).needs_weights:
        return None
    torch.manual_seed(0)
    with nriqa._backbones_without_download():
        net = pyiqa.create_metric(name, device="cpu", pretrained=False).net
    path = folder / f"{name}.pth"
    torch.save({"params": net.state_dict()}, path)
    return {"file": str(path)}


def bench_scoring(devices, metrics, images, batch, folder) -> list[str]:
    import torch

    from miqd import nriqa

    rows = []
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    for name in metrics:
        weights = random_checkpoint(name, folder)
        for device in devices:
            metric = nriqa.create_metric(name, weights, device)
            metric.scores(x[:1])  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(0, len(images), batch):
                metric.scores(x[i:i + batch])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            rows.append(f"| {name} | {device} | {len(images)} | {batch} | {elapsed / len(images):.3f} | "
                        f"{len(images) / elapsed:.2f} |")
    return rows


def bench_coseg(devices, images, sets, folder) -> list[str]:
    import timm
    import torch

    from miqd.roi import coseg
    from miqd.roi.features import ViTFeatures

    torch.manual_seed(0)
    path = folder / "dino_vits8.pth"
    torch.save(timm.create_model("vit_small_patch8_224.dino", num_classes=0).state_dict(), path)
    rows = []
    for device in devices:
        vit = ViTFeatures("vit_small_patch8_224.dino", {"file": str(path)}, device)
        vit.extract(images[:1])  # warm-up
        t_feat = t_clu = t_gc = 0.0
        n = 0
        for s in range(sets):
            group = images[5 * s:5 * s + 5]
            start = time.perf_counter()
            feats = vit.extract(group, 224, 4, 11, "key", (0, 2, 4, 5), 0.5, batch_size=5)
            t_feat += time.perf_counter() - start
            start = time.perf_counter()
            result = coseg.cosegment([f.descriptors for f in feats], [f.saliency for f in feats],
                                     coseg.CosegParams(), np.random.default_rng(s))
            t_clu += time.perf_counter() - start
            start = time.perf_counter()
            for im, f, fg in zip(group, feats, result.foreground, strict=True):
                coarse = coseg.grid_to_pixels(fg.reshape(f.grid), im.shape[:2], f.load_hw, vit.patch, 4)
                erode = max(1, round(7 * min(im.shape[:2]) / min(f.load_hw))) | 1  # as the stage
                coseg.grabcut_refine(im, coarse, erode, 5, seed=0)
            t_gc += time.perf_counter() - start
            n += len(group)
        total = t_feat + t_clu + t_gc
        tokens = feats[0].grid[0] * feats[0].grid[1]
        rows.append(f"| {device} | {sets} x 5 | {tokens} | {t_feat / n:.2f} | {t_clu / n:.2f} | "
                    f"{t_gc / n:.2f} | {n / total:.3f} | {total / sets:.1f} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--images", type=int, default=4, help="images scored per metric")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--sets", type=int, default=2, help="class sets of 5 images co-segmented")
    p.add_argument("--metrics", nargs="+", default=["piqe", "hyperiqa", "maniqa"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--skip-coseg", action="store_true")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    name = torch.cuda.get_device_name() if "cuda" in devices else "none"
    print(f"torch {torch.__version__}, {args.threads} CPU threads, GPU: {name}\n")
    images = photos(max(args.images, 5 * args.sets))
    with tempfile.TemporaryDirectory() as d:
        print("#### NR-IQA scoring, 500x375 images\n")
        print("| metric | device | images | batch | s/image | images/s |")
        print("|---|---|---:|---:|---:|---:|")
        for row in bench_scoring(devices, args.metrics, images[:args.images], args.batch, Path(d)):
            print(row, flush=True)
        if not args.skip_coseg:
            print("\n#### Co-segmentation, DINO ViT-S/8 stride 4, load 224, 500x375 images\n")
            print("| device | class sets | tokens/image | ViT s/image | k-means + votes s/image | "
                  "GrabCut s/image | images/s | s per class |")
            print("|---|---|---:|---:|---:|---:|---:|---:|")
            for row in bench_coseg(devices, images, args.sets, Path(d)):
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
