"""Workers die with their job: a killed distort or infer job leaves no process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from helpers import REPO, box_mask, write_sources


def _children_when_started(proc: subprocess.Popen, n: int, timeout: float = 120) -> list[psutil.Process]:
    parent = psutil.Process(proc.pid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        kids = [k for k in parent.children(recursive=True) if "resource_tracker" not in " ".join(k.cmdline())]
        if len(kids) >= n:
            time.sleep(1.0)  # let them get to work
            return kids
        if proc.poll() is not None:
            pytest.fail(f"the job ended before its workers started: {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    pytest.fail("the job's workers did not start")


def _gone(kids: list[psutil.Process], timeout: float = 15) -> list[int]:
    deadline = time.time() + timeout
    alive = kids
    while alive and time.time() < deadline:
        alive = [k for k in alive if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    for k in alive:  # do not leave them for the next test
        k.kill()
    return [k.pid for k in alive]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, demo_images):
    tmp = tmp_path_factory.mktemp("workers")
    images = {k: v for k, v in demo_images.items() if k.startswith("demo_val")}
    masks = {k: box_mask(v.shape[:2], 30, 40, 150, 200) for k, v in images.items()}
    select_path, roi_path = write_sources(tmp, images, masks)
    return tmp, select_path, roi_path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_distort_pool_workers_die_with_a_killed_job(sources, sig):
    tmp, select_path, roi_path = sources
    out = tmp / f"out-{sig.name}"
    script = textwrap.dedent(f"""
        from miqd.distort import engine
        engine.run({select_path!r}, {roi_path!r}, {str(out / 'm.parquet')!r}, {str(out / 'l.parquet')!r},
                   "imagenet", {str(out)!r}, engine.DistortSettings(("motion_blur", "glass_blur", "snow")), workers=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    kids = _children_when_started(proc, 2)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert _gone(kids) == [], f"distort workers outlived their job ({sig.name})"
    written = sorted(out.rglob("*.png"))
    time.sleep(1.0)
    assert sorted(out.rglob("*.png")) == written  # nothing is written after the job died


def test_infer_loader_workers_die_with_a_killed_job(sources, tmp_path):
    tmp, select_path, roi_path = sources
    out = tmp_path / "out"
    manifest = tmp_path / "m.parquet"
    script = textwrap.dedent(f"""
        import time
        from miqd.distort import engine
        from miqd.models import infer
        from miqd.models.backends.timm_backend import TimmPredictor
        from miqd.models.registry import ModelSpec

        engine.run({select_path!r}, {roi_path!r}, {str(manifest)!r}, {str(tmp_path / 'l.parquet')!r}, "imagenet",
                   {str(out)!r}, engine.DistortSettings(("contrast",)))
        slow = TimmPredictor.predict
        TimmPredictor.predict = lambda self, images: (time.sleep(0.5), slow(self, images))[1]
        spec = ModelSpec(id="a", task="cls", backend="timm", arch="resnet10t", weights="random", benchmark=1.0,
                         group="g", preprocess={{"size": 64, "resize": 72}})
        infer.run("cls", "000", [spec], {select_path!r}, {str(manifest)!r}, {str(tmp_path / 'i.parquet')!r},
                  {str(out)!r}, infer.InferSettings(batch_size=4, workers=2, chunk_size=8, threads=1))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    kids = _children_when_started(proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _gone(kids) == [], "infer DataLoader workers outlived their job"
