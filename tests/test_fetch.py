"""`miqd models fetch` and the source checks of `miqd models check`, offline: downloads come from
file:// URLs the tests create, mmdetection's sources from an archive laid out like its release."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from miqd.errors import InputError
from miqd.models import fetch
from miqd.models.backends import mmdet_backend
from miqd.models.registry import load_registry


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MIQD_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "weights"


def _checkpoint(tmp_path: Path, content: bytes, prefix: str | None = None) -> str:
    prefix = prefix or hashlib.sha256(content).hexdigest()[:8]
    path = tmp_path / "remote" / f"faster-rcnn_r50_fpn_1x_coco_20200130-{prefix}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path.as_uri()


def test_a_download_is_checked_against_the_hash_in_its_name(tmp_path, cache):
    url = _checkpoint(tmp_path, b"weights" * 1000)
    dest = cache / Path(url).name
    assert fetch.download(url, dest).endswith(f"SHA-256 prefix {Path(url).stem[-8:]} verified")
    assert dest.read_bytes() == b"weights" * 1000
    assert fetch.download(url, dest) == "already here"

    bad = _checkpoint(tmp_path, b"not those weights", prefix="0badf00d")
    with pytest.raises(InputError, match=r"does not start with 0badf00d, as its name says: the download from "):
        fetch.download(bad, cache / Path(bad).name)
    assert sorted(p.name for p in cache.iterdir()) == [dest.name]  # no file, no .part left


def test_a_corrupt_file_already_in_the_cache_is_named(tmp_path, cache):
    url = _checkpoint(tmp_path, b"good")
    dest = cache / Path(url).name
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    with pytest.raises(InputError, match=r"is already in the cache: delete it and fetch again"):
        fetch.download(url, dest)


def _sources_archive(tmp_path: Path) -> str:
    """A tar.gz laid out as mmdetection's release archive: a top folder, configs/, projects/."""
    files = {
        "configs/_base_/models/mask-rcnn_r50_fpn.py": "model = dict(type='MaskRCNN')\n",
        "projects/ViTDet/configs/vitdet.py": ("_base_ = ['../../../configs/_base_/models/mask-rcnn_r50_fpn.py']\n"
                                             "custom_imports = dict(imports=['projects.ViTDet.vitdet'])\n"),
        "projects/ViTDet/vitdet/__init__.py": "",
        "projects/ConvNeXt-V2/configs/convnext.py": ("custom_imports = dict(imports=['mmcls.models'], "
                                                    "allow_failed_imports=False)\n"),
        "README.md": "not kept\n",
    }
    path = tmp_path / "v3.3.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"mmdetection-3.3.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri()


def _spec(arch: str):
    return load_registry(_registry_file(arch))[0]


def _registry_file(arch: str) -> Path:
    path = Path(os.environ["MIQD_WEIGHTS"]).parent / f"registry-{abs(hash(arch))}.yaml"
    path.write_text(yaml.safe_dump({"models": [{"id": "vitdet", "task": "ins", "backend": "mmdet", "arch": arch,
                                                "weights": "random", "benchmark": 40.0}]}))
    return path


def test_projects_configs_are_checked_before_and_after_the_sources_are_fetched(tmp_path, cache, monkeypatch):
    vitdet, convnext = _spec("projects/ViTDet/configs/vitdet.py"), _spec("projects/ConvNeXt-V2/configs/convnext.py")
    before = mmdet_backend.config_problems(vitdet)
    assert len(before) == 1 and "is in mmdetection's projects/ folder, which the mmdet wheel does not ship" in before[0]
    assert "run `miqd models fetch --registry" in before[0] and str(cache / "mmdetection-3.3.0") in before[0]

    root, how = fetch.mmdet_sources(_sources_archive(tmp_path))
    assert how == "fetched" and root == cache / "mmdetection-3.3.0"
    assert sorted(p.name for p in root.iterdir()) == ["configs", "projects"]  # the top folder and README dropped
    assert fetch.mmdet_sources("file:///nowhere") == (root, "already here")
    monkeypatch.setattr(sys, "path", list(sys.path))  # use_sources appends the sources root
    assert mmdet_backend.config_problems(vitdet) == []  # projects.ViTDet.vitdet resolves from the sources
    assert mmdet_backend.custom_imports(mmdet_backend.config_path(vitdet)) == ["projects.ViTDet.vitdet"]
    (problem,) = mmdet_backend.config_problems(convnext)
    assert "imports 'mmcls.models' (custom_imports), which does not resolve" in problem
    assert "mmcls==1.0.0rc6" in problem and "mmcv 2.1.0" in problem


def test_an_archive_without_the_folders_is_refused(tmp_path):
    path = tmp_path / "empty.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("mmdetection-3.3.0/README.md")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InputError, match=r"the archive has no configs or projects folder"):
        fetch.mmdet_sources(path.as_uri())
    assert not (Path(os.environ["MIQD_WEIGHTS"]) / "mmdetection-3.3.0").exists()


def _miqd(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miqd", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **(env or {})), **kw)


def test_fetch_says_it_is_offline_and_needs_a_registry(tmp_path, cache):
    registry = tmp_path / "hub.yaml"
    registry.write_text(yaml.safe_dump({"models": [{"id": "resnet50", "task": "cls", "backend": "timm",
                                                    "arch": "resnet50.a1_in1k", "benchmark": 80.4,
                                                    "weights": {"hub": "timm/resnet50.a1_in1k"}}]}))
    proc = _miqd("models", "fetch", "--registry", str(registry),
                 env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert proc.returncode == 2
    assert f"registry {registry}: 1 models, 1 things to fetch" in proc.stdout
    assert "resnet50" in proc.stderr and "HF_HUB_OFFLINE=1 is set" in proc.stderr
    assert "HF_HUB_OFFLINE=0 miqd models fetch" in proc.stderr and "Traceback" not in proc.stderr
    assert "0 of 1 fetched or already here; failed: resnet50" in proc.stdout

    proc = _miqd("models", "fetch")
    assert proc.returncode == 2 and "the following arguments are required: --registry" in proc.stderr


def test_listing_into_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "miqd", "models", "list", "--registry", "config/models.yaml"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before miqd writes a line, as `| head` may
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
