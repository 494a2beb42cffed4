"""The out-of-memory retry of the infer stage, on a real device: a batch too large for the card
is halved until it fits, through the stage's own `predict_in_batches`.

    python benchmarks/oom.py --device cuda [--size 2048] [--batch 1024]
    python benchmarks/oom.py --device cpu --inject-above 4     # no card to fill: the OOM is injected

A random-weight ResNet-50 at --size px (its preprocess set to that size) gets --batch random
images; prints a Markdown table: the batch asked for, the batch that worked, the wall time, and
the device's peak memory.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from miqd.devices import resolve_device
from miqd.models import infer
from miqd.models.backends import create_predictor
from miqd.models.registry import ModelSpec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None, help="input size (default 2048 on CUDA, 64 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="images asked for (default 1024 on CUDA, 16 on CPU)")
    p.add_argument("--inject-above", type=int, default=None,
                   help="raise torch.OutOfMemoryError for passes above this many images (CPU default 4)")
    args = p.parse_args()
    device = resolve_device(args.device, "--device")
    gpu = device.startswith("cuda")
    size = args.size or (2048 if gpu else 64)
    batch = args.batch or (1024 if gpu else 16)
    inject = args.inject_above if args.inject_above is not None else (None if gpu else 4)
    spec = ModelSpec(id="resnet50_oom", task="cls", backend="timm", arch="resnet50", weights="random",
                     benchmark=80.4, group="oom", preprocess={"size": size, "resize": size})
    predictor = create_predictor(spec, device, "bf16" if gpu else "fp32", gpu)
    if inject is not None:
        real = predictor.predict

        def small_card(images):
            if len(images) > inject:
                raise torch.OutOfMemoryError(f"CUDA out of memory (injected above {inject} images)")
            return real(images)

        predictor.predict = small_card
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out, worked = infer.predict_in_batches(predictor, images, batch, spec.id, device)
    elapsed = time.perf_counter() - start
    assert len(out) == batch
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else "-"
    name = torch.cuda.get_device_name() if gpu else "CPU"
    how = f"injected above {inject}" if inject is not None else "real"
    print(f"\n### Out-of-memory retry on {name} ({how}), ResNet-50 at {size} px\n")
    print("| asked | worked | images | wall (s) | peak device memory |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {batch} | {worked} | {len(out)} | {elapsed:.1f} | {peak} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
