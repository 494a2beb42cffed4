"""Inference throughput: decode-once group inference against one model at a time, and the floor.

    python benchmarks/infer.py [--registry config/models_demo.yaml] [--group efficientnet-lite]
                               [--sources 2] [--corruptions contrast fog] [--device auto]
                               [--random-weights]   # any registry, no weights needed (speed only)

Builds a real shard (demo photos, distorted by the engine: per source 1 original + 25 pairs per
corruption), then times, through the stage's own code (`miqd.models.infer.run`):
1. the group: every model of the group on each decoded batch (the infer job);
2. each model alone: its own pass over the shard, decoding every image again;
3. the floor: each model's forward pass on random tensors of its input size (no decode, no
   preprocessing, no output handling) — what the hardware can do at best.
Prints a Markdown table (images/s), the ratio of (2) to (1), the group's share of the floor, and an
estimate of device-hours for the full MIQD-2.5M workload at the measured per-model rates.
On a GPU (`--device cuda`) bf16 autocast and channels_last are used, as the full-scale config does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from miqd import layout
from miqd.devices import resolve_device
from miqd.distort import engine
from miqd.io import read_image, write_mask_png, write_table
from miqd.models import infer
from miqd.models.backends import create_predictor
from miqd.models.registry import groups, load_registry
from miqd.roi import ROI_SCHEMA
from miqd.select import SELECT_SCHEMA
from miqd.sources import materialize_demo

REPO = Path(__file__).resolve().parents[1]
FULL_SCALE_IMAGES = {"cls": 5000 * 251, "det": 4952 * 251, "ins": 4952 * 251}  # sources x (250 + original)


def build_shard(tmp: Path, task: str, n_sources: int, corruptions: list[str]) -> dict:
    dataset = layout.TASK_DATASET[task]
    photos = tmp / "photos"
    materialize_demo(REPO / "resources" / "demo" / dataset / "sources.yaml", photos)
    sel, roi = [], []
    for path in sorted(photos.glob("*.png"))[:n_sources]:
        image = read_image(path)
        h, w = image.shape[:2]
        mask = np.zeros((h, w), bool)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
        mask_path = tmp / "masks" / path.name
        write_mask_png(mask_path, mask)
        sel.append(dict(image_id=path.stem, path=str(path), width=w, height=h, class_index=0, class_name="x",
                        categories=None, score=None, selected=True))
        roi.append(dict(image_id=path.stem, mask_path=str(mask_path), width=w, height=h, roi_fraction=0.25,
                        n_components=1, flag="ok"))
    select_path, roi_path = tmp / "select.parquet", tmp / "roi.parquet"
    write_table(select_path, pa.Table.from_pylist(sel, schema=SELECT_SCHEMA))
    write_table(roi_path, pa.Table.from_pylist(roi, schema=ROI_SCHEMA))
    manifest = tmp / "manifest.parquet"
    engine.run(str(select_path), str(roi_path), str(manifest), str(tmp / "levels.parquet"), dataset,
               str(tmp / "out"), engine.DistortSettings(tuple(corruptions)), workers=2)
    return {"select": str(select_path), "manifest": str(manifest), "out": str(tmp / "out")}


def timed_run(task: str, specs, shard: dict, settings: infer.InferSettings, name: str, tmp: Path) -> tuple[float, int]:
    index = tmp / "runs" / name / "index.parquet"
    out = tmp / "runs" / name / "out"
    out.mkdir(parents=True, exist_ok=True)
    for link in ("miqa_cls", "miqa_det"):  # the distorted images, shared, predictions apart
        if (Path(shard["out"]) / link).exists() and not (out / link).exists():
            (out / link).symlink_to(Path(shard["out"]) / link)
    start = time.perf_counter()
    table = infer.run(task, "000", specs, shard["select"], shard["manifest"], str(index), str(out), settings)
    return time.perf_counter() - start, int(table["rows"].iloc[0])


def floor_rate(spec, settings: infer.InferSettings, image_shape: tuple[int, int], repeats: int = 3) -> float:
    """Images/s of the bare forward pass on random input (classifiers: the network on a tensor of
    its input size; detectors: predict() on random images, which includes their own resize)."""
    predictor = create_predictor(spec, settings.device, settings.precision, settings.channels_last)
    b = settings.batch_size
    if spec.task == "cls":
        x = torch.randn(b, 3, predictor.size, predictor.size, device=settings.device)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def step():
            with torch.inference_mode(), predictor.autocast():
                predictor.model(x)
    else:
        imgs = [np.random.default_rng(k).integers(0, 256, (*image_shape, 3), dtype=np.uint8) for k in range(b)]

        def step():
            predictor.predict(imgs)
    step()  # warm-up
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if settings.device.startswith("cuda"):
        torch.cuda.synchronize()
    return b * repeats / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=str(REPO / "config" / "models_demo.yaml"))
    parser.add_argument("--group", default="efficientnet-lite", help="the GPU group to time")
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--corruptions", nargs="+", default=["contrast", "fog"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--random-weights", action="store_true",
                        help="build every model with random weights (speed does not depend on them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    specs_by_group = groups(load_registry(args.registry))
    matches = [(t, g) for t, g in specs_by_group if g == args.group]
    if not matches:
        print(f"no group {args.group!r} in {args.registry}; groups: {sorted(g for _, g in specs_by_group)}")
        return 2
    task, _ = matches[0]
    specs = specs_by_group[matches[0]]
    if args.random_weights:
        specs = [dataclasses.replace(s, weights="random") for s in specs]
    device = resolve_device(args.device, "--device")
    gpu = device.startswith("cuda")
    settings = infer.InferSettings(device=device, precision="bf16" if gpu else "fp32", channels_last=gpu,
                                   batch_size=args.batch_size, workers=args.workers, chunk_size=4096,
                                   threads=args.threads)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if gpu else f"CPU, {args.threads} threads"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shard = build_shard(tmp, task, args.sources, args.corruptions)
        shape = read_image(next(Path(shard["out"]).rglob("*.png"))).shape[:2]
        group_s, n = timed_run(task, specs, shard, settings, "group", tmp)
        alone = {s.id: timed_run(task, [s], shard, settings, f"alone-{s.id}", tmp)[0] for s in specs}
        floors = {s.id: floor_rate(s, settings, shape) for s in specs}

    print(f"\n### {task} group `{args.group}` on {name}: {n} images ({args.sources} sources x "
          f"{len(args.corruptions)} corruptions x 25 + originals), batch {args.batch_size}, "
          f"{settings.precision}\n")
    print("| model | alone: images/s | floor (forward only): images/s | alone / floor |")
    print("|---|---:|---:|---:|")
    for s in specs:
        rate = n / alone[s.id]
        print(f"| {s.id} | {rate:.1f} | {floors[s.id]:.1f} | {rate / floors[s.id]:.0%} |")
    floor_group = 1.0 / sum(1.0 / floors[s.id] for s in specs)  # images/s if every model ran at its floor
    one_at_a_time = sum(alone.values())
    print(f"| **group, decode once** | **{n / group_s:.1f}** | {floor_group:.1f} | **{n / group_s / floor_group:.0%}** |")
    print(f"| one model at a time (sum) | {n / one_at_a_time:.1f} | | |")
    print(f"\ndecode-once group vs one model at a time: {one_at_a_time / group_s:.2f}x faster "
          f"({group_s:.1f} s vs {one_at_a_time:.1f} s for {len(specs)} models)")
    per_image = {s.id: 1.0 / floors[s.id] for s in specs}
    hours = FULL_SCALE_IMAGES[task] * sum(per_image.values()) / 3600
    mean_model = FULL_SCALE_IMAGES[task] * np.mean(list(per_image.values())) / 3600
    print(f"\nFull MIQD-2.5M workload at these floor rates on {name}: {hours:.1f} device-hours for these "
          f"{len(specs)} {task} models ({FULL_SCALE_IMAGES[task]:,} images each); {mean_model:.1f} h per "
          f"model of this size, i.e. ~{mean_model * 75:.0f} h for 75 models of this size (the paper's "
          f"ensemble mixes smaller and much larger ones).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
