"""`miqd resources`: per-rule SLURM suggestions from the benchmark files Snakemake writes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO
from miqd import layout
from miqd.errors import InputError
from miqd.resources import read_benchmarks, suggest

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(outdir, rule, name, s, rss, cpu):
    path = layout.benchmark_path(str(outdir), rule, name)
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(HEADER + f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_suggestions_take_the_worst_job_with_headroom(tmp_path):
    _bench(tmp_path, "infer", "cls-cnn-000", 100.0, 3000.0, 150.0)
    _bench(tmp_path, "infer", "cls-cnn-001", 200.0, 4100.0, 250.0)
    _bench(tmp_path, "train", "ra_miqa_cls_composite", 4000.0, "NA", 8000.0)
    _bench(tmp_path, "distort", "imagenet-000", 30.0, 200.0, 58.0)
    table = suggest(read_benchmarks(str(tmp_path))).set_index("rule")
    assert table.loc["infer", "jobs"] == 2 and table.loc["infer", "max_s"] == 200.0
    assert table.loc["infer", "mem_mb"] == 5500  # 4100 x 1.3 = 5330, up to 500 MB
    assert table.loc["infer", "runtime"] == 10  # 200 s x 1.5 = 5 min, at least 10
    assert table.loc["infer", "cpu_per_wall"] == pytest.approx(400 / 300)
    assert table.loc["train", "runtime"] == 100  # 4000 s x 1.5 = 100 min
    assert table.loc["train", "mem_mb"] == 1000  # not sampled (NA): the floor
    assert table.loc["distort", "mem_mb"] == 1000

    proc = subprocess.run([sys.executable, "-m", "miqd", "resources", "--outdir", str(tmp_path),
                           "--profile", "profiles/slurm"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["infer"] == ["2", "200.0", "150.0", "4100", "1.33", "64000", "480", "5500", "10"]
    assert "  infer:\n    mem_mb: 5500\n    runtime: 10\n" in proc.stdout


def test_no_benchmarks_is_an_error_that_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match=r"no benchmark files under .*logs/benchmarks: run \(part of\) the workflow"):
        read_benchmarks(str(tmp_path))
    path = tmp_path / "logs" / "benchmarks" / "infer" / "x.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match=r"x.tsv: not a Snakemake benchmark file \(missing cpu_time, max_rss, s\)"):
        read_benchmarks(str(tmp_path))


def test_the_demo_measures_its_distort_infer_label_and_train_jobs(demo_run):
    jobs = read_benchmarks(str(demo_run))
    assert set(jobs["rule"]) == {"distort", "infer", "label", "train"}
    assert len(jobs[jobs.rule == "distort"]) == 3 and (jobs["s"] > 0).all()
    assert (jobs.loc[jobs.rule == "infer", "max_rss"] > 100).all()  # real peaks of real jobs, in MB
