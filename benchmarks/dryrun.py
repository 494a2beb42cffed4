"""Wall time of a full-scale dry run (`snakemake -n`) of MIQD-2.5M: the plan must take seconds.

    python benchmarks/dryrun.py [--repeats 3]

Builds the stand-in tree (`miqd standin`: empty files shaped like ImageNet val and COCO val2017)
in a temporary folder, then times `snakemake -n` on config/miqd25m.yaml pointed at it, locally and
with the SLURM profile. Target: under 30 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miqd.standin import make_standin

REPO = Path(__file__).resolve().parents[1]


def dry_run(config: Path, *extra: str) -> tuple[float, int]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(config), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    total = int(re.search(r"^total\s+(\d+)$", proc.stdout, re.M)[1])
    return elapsed, total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        config = make_standin(d, REPO / "config" / "miqd25m.yaml")
        print(f"stand-in tree (55,000 empty images + annotations): {time.perf_counter() - start:.1f} s\n")
        print("| dry run | jobs | wall time s (best of %d) | target |" % args.repeats)
        print("|---|---:|---:|---:|")
        for label, extra in (("local", ()), ("--profile profiles/slurm", ("--profile", "profiles/slurm"))):
            runs = [dry_run(config, *extra) for _ in range(args.repeats)]
            print(f"| {label} | {runs[0][1]} | {min(t for t, _ in runs):.2f} | < 30 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
