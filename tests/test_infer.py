"""The infer stage: decode-once batches over a shard, per-model Parquet files, resume, adding a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import box_mask, write_sources
from miqd.distort import engine
from miqd.io import InputError
from miqd.models import infer
from miqd.models.backends.timm_backend import TimmPredictor
from miqd.models.registry import ModelSpec


def cls_spec(model_id: str, **kw) -> ModelSpec:
    base = dict(id=model_id, task="cls", backend="timm", arch="resnet10t", weights="random",
                benchmark=70.0, group="g", preprocess={"size": 64, "resize": 72})
    base.update(kw)
    return ModelSpec(**base)


@pytest.fixture(scope="module")
def shard(tmp_path_factory, demo_images):
    """Two small sources with 2 corruptions each: 2 x (1 original + 50 distortions) images."""
    tmp = tmp_path_factory.mktemp("infer")
    images = {k: demo_images[k][:96, :128].copy() for k in ("demo_val_00000001", "demo_val_00000003")}
    masks = {k: box_mask(v.shape[:2], 20, 30, 70, 100) for k, v in images.items()}
    select_path, roi_path = write_sources(tmp, images, masks)
    manifest = tmp / "manifest.parquet"
    engine.run(select_path, roi_path, str(manifest), str(tmp / "levels.parquet"), "imagenet",
               str(tmp / "out"), engine.DistortSettings(("contrast", "fog")))
    return {"tmp": tmp, "select": select_path, "manifest": str(manifest), "out": str(tmp / "out")}


SETTINGS = infer.InferSettings(device="cpu", batch_size=8, workers=0, chunk_size=16, threads=1)


def _run(shard, specs, name, settings=SETTINGS):
    index = shard["tmp"] / name / "index.parquet"
    return infer.run("cls", "000", specs, shard["select"], shard["manifest"], str(index), shard["out"],
                     settings)


def _count_predict_calls(monkeypatch, fail_after: int | None = None) -> dict:
    calls: dict[str, int] = {}
    real = TimmPredictor.predict

    def counting(self, images):
        calls[self.spec.id] = calls.get(self.spec.id, 0) + 1
        if fail_after is not None and sum(calls.values()) > fail_after:
            raise KeyboardInterrupt("killed")
        return real(self, images)

    monkeypatch.setattr(TimmPredictor, "predict", counting)
    return calls


def test_predictions_per_model_and_an_index(shard):
    index = _run(shard, [cls_spec("a"), cls_spec("b")], "first")
    assert index.model.tolist() == ["a", "b"] and (index.rows == 102).all()
    assert (index.weights == "random").all()
    for path in index.path:
        table = pq.read_table(path)
        meta = table.schema.metadata
        assert meta[b"miqd.weights"] == b"random" and len(meta[b"miqd.fingerprint"]) == 16
        df = table.to_pandas()
        assert len(df) == 102
        assert df.corruption.iloc[0] == "original" and df.roi_level.iloc[0] == 0
        assert (df.groupby("image_id").size() == 51).all()
        assert set(df.corruption) == {"original", "contrast", "fog"}
        assert all(len(ids) == 5 for ids in df.top5_ids)
        assert np.all([np.all(np.diff(p) <= 0) for p in df.top5_probs])


def test_each_image_is_decoded_once_per_batch_for_all_models(shard, monkeypatch):
    decoded = []
    real = infer.ImageFiles.__getitem__

    def counting(self, i):
        decoded.append(i)
        return real(self, i)

    monkeypatch.setattr(infer.ImageFiles, "__getitem__", counting)
    _run(shard, [cls_spec("c"), cls_spec("d"), cls_spec("e")], "decode")
    assert sorted(decoded) == list(range(102))  # 102 decodes for 3 models, not 306


def test_a_killed_job_resumes_at_the_first_missing_chunk(shard, monkeypatch):
    specs = [cls_spec("a"), cls_spec("b")]
    reference = {s: pd.read_parquet(p) for s, p in zip("ab", _run(shard, specs, "ref").path, strict=True)}
    for s in specs:  # forget the finished files: this job starts from nothing
        for p in (shard["tmp"] / "out").rglob(f"infer/cls/{s.id}/*"):
            p.unlink()
    _count_predict_calls(monkeypatch, fail_after=9)  # dies in the 3rd chunk (2 batches each)
    with pytest.raises(KeyboardInterrupt):
        _run(shard, specs, "killed")
    partial = sorted(p.name for p in (shard["tmp"] / "out").rglob(".partial-*/*.parquet"))
    assert partial == ["chunk-00000.parquet", "chunk-00000.parquet", "chunk-00001.parquet",
                       "chunk-00001.parquet"]
    monkeypatch.undo()
    calls = _count_predict_calls(monkeypatch)
    index = _run(shard, specs, "resumed")
    assert calls == {"a": 9, "b": 9}  # 7 chunks of <= 16 images = 13 batches of 8; 2 chunks (4) done
    for s, p in zip("ab", index.path, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(p), reference[s])
    assert not list((shard["tmp"] / "out").rglob(".partial-*"))


def test_adding_a_model_to_a_group_runs_only_that_model(shard, monkeypatch):
    _run(shard, [cls_spec("a"), cls_spec("b")], "before")
    calls = _count_predict_calls(monkeypatch)
    index = _run(shard, [cls_spec("a"), cls_spec("b"), cls_spec("new")], "after")
    assert calls == {"new": 13}  # 102 images in batches of 8
    assert index.model.tolist() == ["a", "b", "new"]
    calls.clear()
    _run(shard, [cls_spec("a", preprocess={"size": 56, "resize": 64}), cls_spec("b")], "changed")
    assert calls == {"a": 13}  # a changed model (new fingerprint) is recomputed


def test_bad_weights_fail_before_any_image_is_read(shard, tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(infer.ImageFiles, "__getitem__", lambda self, i: read.append(i))
    bad = cls_spec("bad", weights={"file": str(tmp_path / "missing.pth")})
    with pytest.raises(InputError, match=r"model 'bad': weights file .*missing\.pth does not exist"):
        _run(shard, [cls_spec("a", arch="resnet14t"), bad], "bad")
    assert read == []
    assert not (shard["tmp"] / "bad" / "index.parquet").exists()
