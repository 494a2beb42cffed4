"""The GPU run-book: every device measurement the docs need, in one run, into one Markdown file.

    python benchmarks/gpu.py --device cuda --out gpu.md     # ~6 min on one H100/H200
    python benchmarks/gpu.py --device cpu --out cpu.md      # CI-sized (tests/test_benchmarks.py)

Runs, each in its own process with this interpreter (a failure is reported in the file and the
rest still run):
1. infer, one classification group and one detection group (random weights: no downloads; speed
   does not depend on the values) at bf16 with channels_last on CUDA: the decode-once group
   against one model at a time and against each model's forward-only floor;
2. a training step rate of RA-MIQA and ViT-S, and the data-loading rate;
3. select (NR-IQA scoring) and roi (co-segmentation) throughput;
4. the out-of-memory retry: a batch too large for the card, halved until it fits.
Needs nothing from the internet: the models are built from their architectures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# (title, script, arguments on CUDA, arguments on the CPU): the CPU sizes keep the whole run near
# a minute on 2 cores; the CUDA ones are sized for about 6 minutes on one H100/H200 (unmeasured)
STEPS = [
    ("infer: classification group", "infer.py",
     ["--registry", "config/models.yaml", "--group", "cls-transformer", "--random-weights", "--sources", "4",
      "--corruptions", "contrast", "fog", "gaussian_noise", "--batch-size", "128", "--workers", "8"],
     ["--registry", "{cpu_registry}", "--group", "tiny-cls", "--sources", "1", "--corruptions", "contrast",
      "--batch-size", "8", "--workers", "0"]),
    ("infer: detection group", "infer.py",
     ["--registry", "config/models.yaml", "--group", "det-yolo", "--random-weights", "--sources", "3",
      "--corruptions", "contrast", "fog", "--batch-size", "64", "--workers", "8"],
     ["--registry", "{cpu_registry}", "--group", "tiny-det", "--sources", "1", "--corruptions", "contrast",
      "--batch-size", "4", "--workers", "0"]),
    ("train: step rate", "train.py", ["--batch-size", "128", "--steps", "20", "--workers", "8"],
     ["--batch-size", "4", "--steps", "2", "--crop", "96", "--resize", "112", "--region", "112", "--workers", "0",
      "--data-images", "8"]),
    ("select and roi: throughput", "select_roi.py", ["--images", "32", "--batch", "16", "--sets", "2"],
     ["--images", "2", "--batch", "2", "--metrics", "piqe", "--skip-coseg"]),
    ("out-of-memory retry", "oom.py", [], ["--size", "64", "--batch", "16", "--inject-above", "4"]),
]


# the CPU form's groups: small real architectures at 64 px, so the code paths run in seconds
CPU_REGISTRY = {"models": [
    {"id": "resnet10t_a", "task": "cls", "backend": "timm", "arch": "resnet10t", "weights": "random",
     "benchmark": 66.0, "group": "tiny-cls", "preprocess": {"size": 64, "resize": 72}},
    {"id": "resnet10t_b", "task": "cls", "backend": "timm", "arch": "resnet14t", "weights": "random",
     "benchmark": 72.0, "group": "tiny-cls", "preprocess": {"size": 64, "resize": 72}},
    {"id": "fcos_r50", "task": "det", "backend": "torchvision", "arch": "fcos_resnet50_fpn", "weights": "random",
     "benchmark": 39.2, "group": "tiny-det", "preprocess": {"size": 64}, "score_threshold": 0.0,
     "max_detections": 10},
]}


def run_step(script: str, args: list[str], device: str, timeout: int) -> tuple[int, str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / script), "--device", device, *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout} s", time.perf_counter() - start
    text = proc.stdout if proc.returncode == 0 else (proc.stdout + proc.stderr)[-3000:]
    return proc.returncode, text, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", default="gpu-runbook.md", help="the Markdown file to write")
    p.add_argument("--timeout", type=int, default=240, help="seconds per step")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu for the CI-sized form", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [f"# GPU run-book: {name}", "",
             f"{datetime.date.today().isoformat()}, torch {torch.__version__}, Python {platform.python_version()}, "
             f"`python benchmarks/gpu.py --device {args.device}`", "",
             "| step | status | wall (s) |", "|---|---|---:|"]
    sections, failed = [], 0
    tmp = tempfile.TemporaryDirectory()
    cpu_registry = Path(tmp.name) / "registry.yaml"
    cpu_registry.write_text(yaml.safe_dump(CPU_REGISTRY))
    for title, script, gpu_args, cpu_args in STEPS:
        print(f"[gpu.py] {title} ...", file=sys.stderr, flush=True)
        step_args = [a.format(cpu_registry=cpu_registry) for a in (gpu_args if args.device == "cuda" else cpu_args)]
        rc, text, wall = run_step(script, step_args, args.device, args.timeout)
        failed += rc != 0
        lines.append(f"| {title} | {'ok' if rc == 0 else f'FAILED (exit {rc})'} | {wall:.0f} |")
        body = text.strip() if rc == 0 else "```\n" + text.strip() + "\n```"
        sections += ["", f"## {title} (`benchmarks/{script}`)", "", body]
    tmp.cleanup()
    Path(args.out).write_text("\n".join(lines + sections) + "\n")
    print(f"[gpu.py] wrote {args.out}; {len(STEPS) - failed} of {len(STEPS)} steps ok", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
