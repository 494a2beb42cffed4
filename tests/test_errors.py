"""Bad input: clear errors that name the file or key, and nothing left half-written."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import box_mask, write_sources
from miqd import cli
from miqd.distort import engine
from miqd.errors import InputError


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _run(select_path, roi_path, tmp, **kw):
    settings = engine.DistortSettings(("contrast", "gaussian_noise"))
    out = tmp / "out"
    return engine.run(select_path, roi_path, str(out / "m.parquet"), str(out / "l.parquet"),
                      "imagenet", str(out), settings, **kw)


@pytest.fixture
def sources(tmp_path, small_image):
    images = {"a": small_image, "b": small_image[::-1].copy()}
    masks = {k: box_mask(v.shape[:2], 10, 10, 60, 60) for k, v in images.items()}
    select_path, roi_path = write_sources(tmp_path, images, masks)
    return tmp_path, select_path, roi_path


def test_unreadable_image_names_the_file_and_writes_nothing(sources):
    tmp, select_path, roi_path = sources
    (tmp / "src" / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(InputError, match=r"image .*src/b\.png cannot be decoded"):
        _run(select_path, roi_path, tmp)
    assert _files(tmp / "out") == []


def test_missing_image_names_the_file(sources):
    tmp, select_path, roi_path = sources
    (tmp / "src" / "a.png").unlink()
    with pytest.raises(InputError, match=r"image .*src/a\.png does not exist"):
        _run(select_path, roi_path, tmp)
    assert _files(tmp / "out") == []


def test_mask_of_the_wrong_size_names_the_mask_and_both_sizes(sources):
    from miqd.io import write_mask_png

    tmp, select_path, roi_path = sources
    write_mask_png(tmp / "masks" / "b.png", np.ones((50, 50), bool))
    with pytest.raises(InputError, match=r"ROI mask .*masks/b\.png is 50x50 \(WxH\) but its image is 128x96"):
        _run(select_path, roi_path, tmp)
    assert _files(tmp / "out") == []


def test_a_failure_midway_removes_what_the_job_wrote(sources, monkeypatch):
    tmp, select_path, roi_path = sources
    calls = {"n": 0}
    real = engine.encode_png

    def failing(image, *args):
        calls["n"] += 1
        if calls["n"] == 70:  # in the second source
            raise OSError("disk full")
        return real(image, *args)

    monkeypatch.setattr(engine, "encode_png", failing)
    with pytest.raises(OSError, match="disk full"):
        _run(select_path, roi_path, tmp)
    assert _files(tmp / "out") == []


def test_unknown_corruption_in_settings():
    with pytest.raises(InputError, match="distort.corruptions: unknown corruption 'blur'"):
        engine.DistortSettings(("contrast", "blur"))


def test_cli_reports_bad_candidate_without_a_traceback(tmp_path, small_image, capsys):
    from PIL import Image

    Image.fromarray(small_image).save(tmp_path / "x.png")
    code = cli.main(["corrupt", str(tmp_path / "x.png"), "--corruption", "fog", "--candidate", "13",
                     "--out", str(tmp_path / "y.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--candidate 13: the miqd25m scheme has candidates 1..12 for fog" in err
    assert "Traceback" not in err
    assert not (tmp_path / "y.png").exists()


def test_cli_reports_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code = cli.main(["corrupt", str(bad), "--corruption", "fog", "--candidate", "2", "--out",
                     str(tmp_path / "y.png")])
    assert code == 2
    assert f"image {bad} cannot be decoded" in capsys.readouterr().err


def test_an_unreadable_image_stays_an_input_error_after_ultralytics_is_imported(tmp_path):
    """ultralytics replaces PIL's Image.open on import with a wrapper that tries to install a HEIF
    plugin when PIL cannot identify a file; miqd reads images with PIL's own opener."""
    import ultralytics  # noqa: F401 - applies the patch in this process
    from PIL import Image

    from miqd.io import image_size, read_image

    assert Image.open.__module__ != "PIL.Image"  # the patch is in place
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"image .*broken\.png cannot be decoded"):
        read_image(bad)
    with pytest.raises(InputError, match=r"image .*broken\.png cannot be read"):
        image_size(bad)


def test_asking_for_cuda_without_one_names_the_config_key(monkeypatch):
    import torch

    from miqd.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "infer.device") == "cpu"
    assert resolve_device("cpu", "infer.device") == "cpu"
    with pytest.raises(InputError, match=r"train.device is 'cuda:1' but this machine has no CUDA device; use auto or cpu"):
        resolve_device("cuda:1", "train.device")
