"""The workflow on a real one-node SLURM cluster, through profiles/slurm and the executor plugin.

Opt in with MIQD_TEST_SLURM=1 (as root): the session then installs the Debian SLURM packages if
missing, starts munged/slurmctld/slurmd with a fake GPU, and stops them at the end. Without the
opt-in, or without root, these tests skip and say why.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import REPO, demo_config, job_counts, published_files, snakemake, snakemake_env
from miqd import layout
from slurm_cluster import SlurmCluster, Unavailable, ensure_installed

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
GPU_RULES = {"select", "roi", "infer", "evaluate_run"}  # train: as many as train.gpus


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if os.environ.get("MIQD_TEST_SLURM") != "1":
        pytest.skip("real-SLURM tests are opt-in: MIQD_TEST_SLURM=1 (as root) installs and starts a "
                    "one-node SLURM for the session; .ci/run sets it")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        ensure_installed(allow_install=True)
        c.start()
    except Unavailable as err:
        c.stop()
        pytest.skip(f"SLURM cannot be started here: {err}")
    yield c
    c.stop()


@pytest.fixture(scope="session")
def profile(cluster, tmp_path_factory) -> Path:
    """profiles/slurm with its placeholders filled in and resources scaled to the test node."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    prof["default-resources"].update(slurm_partition="main", slurm_account="miqd")
    for res in prof["set-resources"].values():
        res["mem_mb"] = 1000
        if "cpus_per_gpu" in res:
            res["cpus_per_gpu"] = 1
    # no accounting daemon in the test cluster: poll with squeue (MinJobAge there is 600 s)
    prof["slurm-status-command"] = "squeue"
    prof["slurm-init-seconds-before-status-checks"] = 1
    prof["slurm-keep-successful-logs"] = True
    folder = tmp_path_factory.mktemp("profile")
    (folder / "config.yaml").write_text(yaml.safe_dump(prof))
    return folder


def _env(cluster) -> dict:
    return snakemake_env({"SLURM_CONF": str(cluster.conf)})


def _submissions(output: str) -> list[tuple[str, str]]:
    return SUBMITTED.findall(output)


def test_demo_runs_as_slurm_jobs_and_matches_a_local_run(cluster, profile, demo_run, tmp_path):
    """The distort stage, one GPU (infer) job and the label job after it, every job a SLURM job."""
    outdir = tmp_path / "out"
    label_job = layout.label_table(str(outdir), "det", "000")
    proc = snakemake("distorted", label_job, "--profile", str(profile), "--configfile",
                     str(demo_config(outdir)), timeout=1200, env=_env(cluster))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]

    submitted = _submissions(text)
    planned = job_counts(text)
    assert len(submitted) == planned["total"] - planned["distorted"]  # all but the target rule
    for job_id, log in submitted:
        rule = re.search(r"rule_([a-z_]+)/", log)[1]
        info = cluster.job(job_id)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (job_id, info)
        tres = info.get("TRES", "") + info.get("TresPerNode", "") + info.get("TresPerJob", "")
        assert ("gpu" in tres) == (rule in GPU_RULES), (rule, tres)
    print(f"{len(submitted)} SLURM jobs, all COMPLETED")

    assert published_files(outdir) == published_files(demo_run)
    for table in sorted((demo_run / "distort").rglob("*.parquet")):
        rel = table.relative_to(demo_run)
        assert (outdir / rel).read_bytes() == table.read_bytes(), rel
    for model in ("retinanet_r50", "fcos_r50"):  # CPU predictions: equal up to thread-count rounding
        rel = Path(layout.predictions(".", "det", model, "000"))
        ours, local = pd.read_parquet(outdir / rel), pd.read_parquet(demo_run / rel)
        assert len(ours) == len(local) == 753
        for a, b in zip(ours.scores, local.scores, strict=True):
            np.testing.assert_allclose(np.sort(a)[::-1][:5], np.sort(b)[::-1][:5], atol=1e-4)
    rel = Path(layout.label_table(".", "det", "000"))
    ours, local = pd.read_parquet(outdir / rel), pd.read_parquet(demo_run / rel)
    assert list(ours.columns) == list(local.columns) and len(ours) == len(local) == 750
    np.testing.assert_allclose(ours["composite"], local["composite"], atol=0.02)


def test_a_failing_slurm_job_fails_the_workflow_and_names_its_logs(cluster, profile, tmp_path):
    outdir = tmp_path / "out"
    cfg = yaml.safe_load(demo_config(outdir).read_text())
    del cfg["sources"]["imagenet"]
    cfg["roi"] = {"coco": {"method": "files", "dir": str(tmp_path / "no_masks_here")}}
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("--profile", str(profile), "--configfile", str(path), "--retries", "0",
                     timeout=600, env=_env(cluster))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    rule_log = outdir / "logs" / "roi" / "coco-000.log"
    assert "Error in rule roi" in text and str(rule_log) in text
    slurm_log = re.search(r"(\S*/slurm_logs/rule_roi/\S+\.log)", text)
    assert slurm_log, text[-3000:]
    assert "ROI mask" in rule_log.read_text() and "does not exist" in rule_log.read_text()
    failed = [job_id for job_id, log in _submissions(text) if "rule_roi" in log]
    assert failed and cluster.job(failed[-1])["JobState"] == "FAILED"


def test_rerun_after_an_interrupt_finishes_without_redoing_completed_jobs(cluster, profile, demo_run,
                                                                         tmp_path):
    outdir = tmp_path / "out"
    cfg = demo_config(outdir)
    log_path = tmp_path / "first.log"
    args = [sys.executable, "-m", "snakemake", "distorted", "--profile", str(profile), "--configfile",
            str(cfg)]
    with open(log_path, "w") as log:
        first = subprocess.Popen(args, cwd=REPO, env=_env(cluster), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 600
            while time.time() < deadline and first.poll() is None:
                finished = re.findall(r"Finished jobid: \d+ \(Rule: select\)", log_path.read_text())
                if len(finished) == 3:
                    break
                time.sleep(1)
            assert first.poll() is None, "the workflow ended before it could be interrupted"
            first.send_signal(signal.SIGINT)  # the one signal on which Snakemake cancels its jobs
            first.wait(timeout=180)
        finally:
            if first.poll() is None:
                first.kill()
    queue = subprocess.run(["squeue", "-h", "-t", "PD,R"], env=_env(cluster), capture_output=True,
                           text=True, timeout=30).stdout.strip()
    assert queue == "", f"jobs still queued after the interrupt: {queue}"

    selects = sorted((outdir / "select").rglob("*.parquet"))
    assert len(selects) == 3
    before = {p: p.stat().st_mtime_ns for p in selects}
    plan = snakemake("distorted", "-n", "--profile", str(profile), "--configfile", str(cfg),
                     env=_env(cluster))
    remaining = job_counts(plan.stdout + plan.stderr)
    assert "select" not in remaining and remaining["total"] < 16, remaining

    again = snakemake("distorted", "--profile", str(profile), "--configfile", str(cfg), timeout=1200,
                      env=_env(cluster))
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert {p: p.stat().st_mtime_ns for p in selects} == before
    assert len(_submissions(again.stdout + again.stderr)) == remaining["total"] - remaining["distorted"]
    assert published_files(outdir) == published_files(demo_run)
