"""Wall time of a full-scale dry run (`snakemake -n`) of MIQD-2.5M: the plan must take seconds.

    python benchmarks/dryrun.py [--repeats 3]

Builds the stand-in tree (`miqd standin`: empty files shaped like ImageNet val and COCO val2017)
in a temporary folder, then times `snakemake -n` on config/miqd25m.yaml pointed at it, locally and
with the SLURM profile. Target: under 15 s on a 2-core machine.

Then the cost a *built* database adds to each plan: every finished distort shard's seal is
checked against the disk (one stat per PNG; `miqd.distort.seal`). Timed on --seal-files empty
files in 1,000-file folders (a tenth of MIQD-2.5M by default) and scaled to 2.5M.
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
    p.add_argument("--seal-files", type=int, default=250_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        config = make_standin(d, REPO / "config" / "miqd25m.yaml")
        print(f"stand-in tree (55,000 empty images + annotations): {time.perf_counter() - start:.1f} s\n")
        print("| dry run | jobs | wall time s (best of %d) | target |" % args.repeats)
        print("|---|---:|---:|---:|")
        for label, extra in (("local", ()), ("--profile profiles/slurm", ("--profile", "profiles/slurm"))):
            runs = [dry_run(config, *extra) for _ in range(args.repeats)]
            print(f"| {label} | {runs[0][1]} | {min(t for t, _ in runs):.2f} | < 15 |")
    with tempfile.TemporaryDirectory() as d:
        print(f"\n{seal_check(Path(d), args.seal_files, args.repeats)}")
    return 0


def seal_check(root: Path, n: int, repeats: int) -> str:
    from miqd.distort import seal

    files = []
    for i in range(n):
        folder = root / "images" / f"{i // 1000:05d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        path = folder / f"{i:07d}.png"
        path.touch()
        files.append(path)
    seal.write(str(root / "shard.files.tsv"), str(root), files)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert seal.damaged(str(root / "shard.files.tsv"), str(root)) == []
        times.append(time.perf_counter() - start)
    best = min(times)
    return (f"seal check of a built database: {n:,} files in {best:.2f} s (best of {repeats}, warm cache); "
            f"{best * 2_510_000 / n:.1f} s per plan at MIQD-2.5M's 2.51M images")


if __name__ == "__main__":
    sys.exit(main())
