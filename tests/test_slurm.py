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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import REPO, demo_config, job_counts, snakemake, snakemake_env
from miqd.distort.corruptions import available_corruptions
from slurm_cluster import SlurmCluster, Unavailable, ensure_installed

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
GPU_RULES = {"select", "roi", "infer", "evaluate_run"}  # train: train.gpus, 0 on the CPU demo


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
    # no accounting daemon in the test cluster: poll with squeue (MinJobAge there is 1 h)
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


# two of the demo's ten corruptions: every rule still runs, on a fifth of the distorted images.
# Each distorted image draws from random streams keyed by (image, corruption, level), so these are
# the very images (and labels) the whole demo makes for the two corruptions.
SLURM_CORRUPTIONS = ["contrast", "pixelate"]


def coco_demo_config(outdir: Path) -> Path:
    """The demo without its ImageNet half and with two corruptions: every rule still runs (det
    and ins labels, a det RA-MIQA run) in a fraction of the time, and its files are the whole
    demo's, restricted to those (`_restricted`)."""
    path = demo_config(outdir)
    cfg = yaml.safe_load(path.read_text())
    del cfg["sources"]["imagenet"], cfg["select"]["imagenet"], cfg["roi"]["imagenet"]
    cfg["train"]["runs"] = [r for r in cfg["train"]["runs"] if r["task"] != "cls"]
    cfg["distort"]["corruptions"] = SLURM_CORRUPTIONS
    cfg["train"]["epochs"] = 1  # its files, not its scores, are compared
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class SlurmDemo:
    outdir: Path
    first: str  # output of the run interrupted with Ctrl-C once the select job had finished
    queued_after_interrupt: str
    selects: dict[Path, int]  # the select tables and their mtimes after the interrupt
    remaining: dict[str, int]  # the plan after the interrupt
    final: str  # output of the run that finished the demo


def _interrupt(proc: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    """Ctrl-C, the one signal on which Snakemake cancels its SLURM jobs. Sent while Snakemake
    waits between status checks (its log quiet for 2 s); one that lands inside a call to sbatch
    or sacctmgr can be lost, so while Snakemake goes on scheduling (new lines about jobs in its
    log) it is sent again, but never while it is shutting down."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        size, quiet_since = -1, time.time()
        while time.time() - quiet_since < 2 and time.time() < deadline:
            if log_path.stat().st_size != size:
                size, quiet_since = log_path.stat().st_size, time.time()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None and time.time() < deadline:
            time.sleep(1)
            if re.search(rb"has been submitted|Finished jobid", log_path.read_bytes()[size:]):
                break  # the signal was lost: Snakemake is still scheduling
    assert proc.poll() is not None, f"Snakemake did not stop within {timeout} s of Ctrl-C"


@pytest.fixture(scope="module")
def slurm_demo(cluster, profile, tmp_path_factory) -> SlurmDemo:
    """The demo's COCO half through profiles/slurm: interrupted once, then run to the end."""
    outdir = tmp_path_factory.mktemp("slurm_demo") / "out"
    cfg = coco_demo_config(outdir)
    log_path = outdir.parent / "first.log"
    args = [sys.executable, "-m", "snakemake", "--profile", str(profile), "--configfile", str(cfg)]
    with open(log_path, "w") as log:
        # Ctrl-C must reach Snakemake even where the tests run in a background shell, which starts
        # its commands with SIGINT ignored (and Python keeps an ignored SIGINT ignored)
        first = subprocess.Popen(args, cwd=REPO, env=_env(cluster), stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.time() + 600
            while time.time() < deadline and first.poll() is None:
                if re.search(r"Finished jobid: \d+ \(Rule: select\)", log_path.read_text()):
                    break
                time.sleep(1)
            assert first.poll() is None, "the workflow ended before it could be interrupted"
            _interrupt(first, log_path)
        finally:
            if first.poll() is None:
                first.kill()
    queued = subprocess.run(["squeue", "-h", "-t", "PD,R"], env=_env(cluster), capture_output=True,
                            text=True, timeout=30).stdout.strip()
    selects = {p: p.stat().st_mtime_ns for p in sorted((outdir / "select").rglob("*.parquet"))}
    plan = snakemake("-n", "--profile", str(profile), "--configfile", str(cfg), env=_env(cluster))
    final = snakemake("--profile", str(profile), "--configfile", str(cfg), timeout=2400, env=_env(cluster))
    text = final.stdout + final.stderr
    assert final.returncode == 0, text[-4000:]
    return SlurmDemo(outdir, log_path.read_text(), queued, selects, job_counts(plan.stdout + plan.stderr), text)


def test_an_interrupted_run_resumes_without_redoing_completed_jobs(slurm_demo):
    assert slurm_demo.queued_after_interrupt == "", "jobs still queued after the interrupt"
    assert len(slurm_demo.selects) == 1  # the one COCO shard
    assert "select" not in slurm_demo.remaining and 0 < slurm_demo.remaining["total"], slurm_demo.remaining
    assert {p: p.stat().st_mtime_ns for p in slurm_demo.selects} == slurm_demo.selects  # not redone
    # every remaining job but the target rule `all` was submitted once, none of the finished ones
    assert len(_submissions(slurm_demo.final)) == slurm_demo.remaining["total"] - 1


def test_every_demo_job_ran_as_a_slurm_job_with_its_resources(slurm_demo, cluster):
    planned = job_counts(slurm_demo.first)  # the whole demo, as the first run planned it
    interrupted = set(_submissions(slurm_demo.first))
    rules = set()
    for job_id, log in [*interrupted, *_submissions(slurm_demo.final)]:
        rule = re.search(r"rule_([a-z_]+)/", log)[1]
        info = cluster.job(job_id)
        if (job_id, log) in interrupted and info["JobState"] == "CANCELLED":
            continue  # cancelled by the Ctrl-C, submitted again by the second run
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (job_id, rule, info)
        tres = info.get("TRES", "") + info.get("TresPerNode", "") + info.get("TresPerJob", "")
        assert ("gpu" in tres) == (rule in GPU_RULES), (rule, tres)
        rules.add(rule)
    assert rules == set(planned) - {"all", "total"}  # the target rule runs in Snakemake itself
    print(f"{len(rules)} rules, every job a COMPLETED SLURM job")


# the stages whose COCO files do not depend on the ImageNet half (training and what reads across
# tasks, evaluate and the report, do); infer and label are compared by value below
COCO_STAGES = ("demo_sources", "select", "roi", "split", "distort", "miqa_det")
# figures that summarise every corruption
SUMMARIES = ("coco.examples.png", "coco.quality.png")


def _is_ours(rel: str) -> bool:
    """Whether the two-corruption COCO run makes this file of the whole demo: a distorted image is
    named <image id>_<corruption>_<levels>.png."""
    if "imagenet" in rel or "cls" in rel:
        return False
    stem = Path(rel).stem.partition("_")[2]
    made = [c for c in available_corruptions() if stem.startswith(f"{c}_")]
    return not made or max(made, key=len) in SLURM_CORRUPTIONS


def _restricted(frame: pd.DataFrame) -> pd.DataFrame:
    """The whole demo's rows for the SLURM run's corruptions and the clean images (tables without
    a corruption column: unchanged)."""
    if "corruption" not in frame:
        return frame
    return frame[frame["corruption"].isin([*SLURM_CORRUPTIONS, "original"])].reset_index(drop=True)


def _table(path: Path, outdir: Path, demo: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.replace(regex={f"^{re.escape(str(outdir))}/": f"{demo}/"})


def test_the_slurm_demo_outputs_equal_a_local_run(slurm_demo, demo_run):
    ours = slurm_demo.outdir
    for stage in (*COCO_STAGES, "infer", "label"):
        files = _outputs(ours / stage)
        assert files, f"the SLURM run wrote nothing under {stage}/"
        theirs = {f for f in _outputs(demo_run / stage) if _is_ours(f)}
        assert files == theirs, (stage, sorted(files ^ theirs)[:10])
    for stage in COCO_STAGES:  # images and masks byte for byte; tables equal but for the outdir in paths
        for rel in sorted(_outputs(ours / stage)):
            a, b = ours / stage / rel, demo_run / stage / rel
            if rel.endswith(".parquet"):
                pd.testing.assert_frame_equal(_table(a, ours, demo_run), _restricted(pd.read_parquet(b)),
                                              obj=f"{stage}/{rel}")
            elif rel.endswith(".csv"):  # MIQA's label files: a row per image, named in the first column
                x, y = pd.read_csv(a), pd.read_csv(b)
                names = y.iloc[:, 0].astype(str)
                y = y[~names.str.endswith(".png") | names.map(_is_ours)].reset_index(drop=True)
                pd.testing.assert_frame_equal(x, y, obj=f"{stage}/{rel}")
            elif rel.endswith(".files.tsv"):  # a shard's seal: the whole demo's lines for these images
                mine = a.read_text().splitlines()
                assert mine and set(mine) <= set(b.read_text().splitlines()), (stage, rel)
            elif Path(rel).name not in SUMMARIES:
                assert a.read_bytes() == b.read_bytes(), (stage, rel)
    # CPU inference: equal up to the rounding of a different thread schedule
    for rel in sorted(_outputs(ours / "infer")):
        a, b = pd.read_parquet(ours / "infer" / rel), _restricted(pd.read_parquet(demo_run / "infer" / rel))
        if "groups" in Path(rel).parts:  # a job's index of its models' files
            assert list(a["model"]) == list(b["model"]), rel
            assert all(len(pd.read_parquet(p)) == n for p, n in zip(a["path"], a["rows"], strict=True)), rel
            continue
        assert list(a.columns) == list(b.columns) and list(a.iloc[:, 0]) == list(b.iloc[:, 0]), rel
        column = "top5_probs" if "top5_probs" in a else "scores"
        for x, y in zip(a[column], b[column], strict=True):
            np.testing.assert_allclose(np.sort(x)[::-1][:5], np.sort(y)[::-1][:5], atol=1e-4, err_msg=rel)
    for rel in sorted(_outputs(ours / "label")):
        if not rel.endswith(".parquet"):
            continue
        a, b = pd.read_parquet(ours / "label" / rel), _restricted(pd.read_parquet(demo_run / "label" / rel))
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0, rel
        np.testing.assert_allclose(a["composite"], b["composite"], atol=0.02, err_msg=rel)
    run = "train/ra_miqa_det_composite"  # the same files (bytes differ with the thread schedule)
    assert _outputs(ours / run) == _outputs(demo_run / run)


def _outputs(folder: Path) -> set[str]:
    """Every file a run wrote under `folder`, by relative path, but its logs."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and p.relative_to(folder).parts[0] != "logs"}


def test_a_failing_slurm_job_fails_the_workflow_and_names_its_logs(cluster, profile, tmp_path):
    outdir = tmp_path / "out"
    cfg = yaml.safe_load(coco_demo_config(outdir).read_text())
    masks = tmp_path / "masks_missing"  # a folder without the masks: the job fails, not the preflight
    masks.mkdir()
    cfg["roi"] = {"coco": {"method": "files", "dir": str(masks)}}
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
