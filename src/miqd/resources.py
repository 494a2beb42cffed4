"""`miqd resources`: SLURM resource suggestions per rule from the jobs Snakemake measured.

Every distort, infer, label and train job writes a benchmark file (`benchmark:`; wall seconds,
peak resident memory, CPU time). Run a pilot of the real config (a few shards) and the suggestions
hold for jobs of that size: memory = the largest peak x headroom, runtime = the longest wall time
x headroom, both rounded up, for the profile's `set-resources`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from miqd import layout
from miqd.errors import InputError

MEM_HEADROOM = 1.3  # peaks vary with images per chunk and allocator timing
TIME_HEADROOM = 1.5  # nodes differ; a job killed at its limit loses its work
MIN_MEM_MB = 1000
MIN_RUNTIME = 10  # minutes; SLURM schedules short limits first, but a job must fit its start-up


def read_benchmarks(outdir: str) -> pd.DataFrame:
    """One row per measured job: rule, job, seconds, max_rss (MB), cpu_time (s)."""
    rows = []
    for path in layout.benchmark_files(outdir):
        table = pd.read_csv(path, sep="\t")
        missing = {"s", "max_rss", "cpu_time"} - set(table.columns)
        if missing or table.empty:
            raise InputError(f"{path}: not a Snakemake benchmark file (missing {', '.join(sorted(missing)) or 'rows'})")
        last = table.iloc[-1]  # `benchmark: repeat(...)` writes one row per repeat: the last run
        rss = pd.to_numeric(last["max_rss"], errors="coerce")  # "NA" when the job was too short to sample
        rows.append({"rule": path.parent.name, "job": path.stem, "s": float(last["s"]),
                     "max_rss": None if pd.isna(rss) else float(rss), "cpu_time": float(last["cpu_time"])})
    if not rows:
        raise InputError(f"no benchmark files under {Path(outdir) / 'logs' / 'benchmarks'}: run (part of) the "
                         f"workflow with this outdir first; distort, infer, label and train jobs write them")
    return pd.DataFrame(rows)


def suggest(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs measured, the worst wall time and peak memory, and the suggested limits."""
    out = []
    for rule, g in jobs.groupby("rule", sort=True):
        rss = g["max_rss"].dropna()
        peak = float(rss.max()) if len(rss) else 0.0
        worst = float(g["s"].max())
        out.append({
            "rule": rule, "jobs": len(g), "max_s": worst, "mean_s": float(g["s"].mean()), "max_rss_mb": peak,
            "cpu_per_wall": float(g["cpu_time"].sum() / max(g["s"].sum(), 1e-9)),
            "mem_mb": max(MIN_MEM_MB, int(math.ceil(peak * MEM_HEADROOM / 500) * 500)),
            "runtime": max(MIN_RUNTIME, int(math.ceil(worst * TIME_HEADROOM / 60 / 5) * 5)),
        })
    return pd.DataFrame(out)


def current(profile: str | None) -> dict[str, dict]:
    if profile is None:
        return {}
    path = Path(profile)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise InputError(f"--profile {profile}: no such profile file (e.g. profiles/slurm/config.yaml)")
    return (yaml.safe_load(path.read_text()) or {}).get("set-resources", {}) or {}


def report(outdir: str, profile: str | None = None) -> str:
    """A Markdown table (measured, now in the profile, suggested) and a set-resources snippet."""
    table = suggest(read_benchmarks(outdir))
    now = current(profile)
    lines = [f"Measured jobs under {outdir} (logs/benchmarks); suggestions = peak x {MEM_HEADROOM}, "
             f"longest x {TIME_HEADROOM}, rounded up" + (f"; profile {profile}" if profile else ""), "",
             "| rule | jobs | longest (s) | mean (s) | peak RSS (MB) | CPU/wall | mem_mb now | runtime now "
             "| mem_mb suggested | runtime suggested (min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        cur = now.get(r.rule, {})
        lines.append(f"| {r.rule} | {r.jobs} | {r.max_s:.1f} | {r.mean_s:.1f} | {r.max_rss_mb:.0f} | "
                     f"{r.cpu_per_wall:.2f} | {cur.get('mem_mb', '-')} | {cur.get('runtime', '-')} | "
                     f"{r.mem_mb} | {r.runtime} |")
    snippet = {"set-resources": {r.rule: {"mem_mb": r.mem_mb, "runtime": r.runtime} for r in table.itertuples()}}
    lines += ["", "For the profile (merge into its set-resources; GPU and CPU counts stay as they are):", "",
              "```yaml", yaml.safe_dump(snippet, sort_keys=True).rstrip(), "```"]
    return "\n".join(lines) + "\n"
