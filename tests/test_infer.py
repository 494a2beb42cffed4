"""The infer stage: decode-once batches over a shard, per-model Parquet files, resume, adding a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import box_mask, write_sources
from miqd.distort import engine
from miqd.errors import InputError
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


def _fresh_copy(shard, tmp_path):
    """The shard's inputs and outputs, copied so a test can change them."""
    import shutil

    shutil.copytree(shard["tmp"], tmp_path / "shard", symlinks=True)
    root = tmp_path / "shard"
    select = root / "select.parquet"
    rows = pq.read_table(select).to_pylist()
    for r in rows:  # the sources live in the copy too
        r["path"] = str(root / "src" / f"{r['image_id']}.png")
    from miqd.io import write_table
    from miqd.select import SELECT_SCHEMA

    write_table(select, __import__("pyarrow").Table.from_pylist(rows, schema=SELECT_SCHEMA))
    return {"tmp": root, "select": str(select), "manifest": str(root / "manifest.parquet"), "out": str(root / "out")}


def _current_rows_only(shard, index):
    """Every prediction row is of an image the shard holds now, with its current hash."""
    images = infer.shard_images(shard["select"], shard["manifest"], shard["out"])
    want = list(zip(images.image_id, images.corruption, images.roi_level, images.bg_level, images.sha256))
    for path in index.path:
        got = pd.read_parquet(path)
        assert list(zip(got.image_id, got.corruption, got.roi_level, got.bg_level, got.sha256)) == want


def test_changed_images_and_only_those_are_predicted_again(shard, tmp_path, monkeypatch):
    """A new blend (distort.blend.kernel 33) rewrites the mixed images; infer recomputes exactly
    those, and the result equals a run from scratch."""
    s = _fresh_copy(shard, tmp_path)
    specs = [cls_spec("a"), cls_spec("b")]
    _run(s, specs, "before")
    old = pd.read_parquet(s["manifest"])
    select_path, roi_path = s["select"], str(s["tmp"] / "roi.parquet")
    settings = engine.DistortSettings(("contrast", "fog"), blend=engine.BlendSettings(kernel=33))
    engine.run(select_path, roi_path, s["manifest"], str(s["tmp"] / "levels.parquet"), "imagenet", s["out"], settings)
    new = pd.read_parquet(s["manifest"])
    changed = int((old.sha256 != new.sha256).sum())
    assert changed == int((new.region_type != "UD").sum()) > 0  # every mixed image, no uniform one

    seen: list[str] = []
    real = TimmPredictor.predict
    monkeypatch.setattr(TimmPredictor, "predict", lambda self, imgs: seen.extend([self.spec.id] * len(imgs))
                        or real(self, imgs))
    index = _run(s, specs, "after")
    assert seen.count("a") == changed and seen.count("b") == changed
    _current_rows_only(s, index)
    monkeypatch.undo()
    for p in index.path:  # the same as predicting everything afresh
        kept = pd.read_parquet(p)
        Path(p).unlink()
        fresh = pd.read_parquet(_run(s, specs, "fresh").set_index("model").loc[Path(p).parent.name, "path"])
        pd.testing.assert_frame_equal(kept, fresh)


def test_images_that_left_the_shard_leave_its_predictions(shard, tmp_path):
    s = _fresh_copy(shard, tmp_path)
    _run(s, [cls_spec("a")], "before")
    m = pq.read_table(s["manifest"])
    keep = pd.Series(m.column("image_id").to_pylist()) == "demo_val_00000001"
    from miqd.io import write_table

    write_table(s["manifest"], m.filter(keep.to_numpy()))
    rows = pq.read_table(s["select"]).to_pylist()
    rows[1]["selected"] = False
    from miqd.select import SELECT_SCHEMA

    write_table(s["select"], __import__("pyarrow").Table.from_pylist(rows, schema=SELECT_SCHEMA))
    index = _run(s, [cls_spec("a")], "after")
    assert index.rows.tolist() == [51]
    _current_rows_only(s, index)


def test_a_file_changed_behind_the_manifest_is_an_error(shard, tmp_path):
    s = _fresh_copy(shard, tmp_path)
    victim = Path(s["out"]) / pd.read_parquet(s["manifest"]).path.iloc[7]
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated after distort wrote it
    with pytest.raises(InputError, match=rf"image {victim} changed since the distort stage wrote it"):
        _run(s, [cls_spec("a")], "truncated")


def test_the_run_fingerprint_covers_device_precision_and_layout():
    from miqd.models.predictions import run_fingerprint

    spec = cls_spec("a")
    cpu = run_fingerprint(spec, "cpu", "fp32", False)
    assert run_fingerprint(spec, "cpu", "bf16", False) == cpu  # the CPU always computes in fp32
    assert run_fingerprint(spec, "cuda", "bf16", False) != run_fingerprint(spec, "cuda", "fp32", False) != cpu
    assert run_fingerprint(spec, "cuda:1", "bf16", True) == run_fingerprint(spec, "cuda:0", "bf16", True)
    assert run_fingerprint(spec, "cuda", "bf16", True) != run_fingerprint(spec, "cuda", "bf16", False)
    det = ModelSpec(id="d", task="det", backend="torchvision", arch="fcos_resnet50_fpn", weights="random",
                    benchmark=1.0, group="g")
    assert run_fingerprint(det, "cuda", "bf16", True) == run_fingerprint(det, "cuda", "bf16", False)  # timm only


def test_out_of_memory_halves_the_batch_and_loses_nothing(shard, tmp_path, monkeypatch, caplog):
    """An injected CUDA out-of-memory above 3 images per pass: the job finishes with batch 2, says so
    in the log and the file's metadata, and its predictions equal an uninterrupted run's at batch 1."""
    import json

    import torch

    ref_shard, oom_shard = _fresh_copy(shard, tmp_path / "ref"), _fresh_copy(shard, tmp_path / "oom")
    spec = cls_spec("oom_net", batch_size=8)
    ref = _run(ref_shard, [cls_spec("oom_net", batch_size=1)], "ref")
    sizes: list[int] = []
    real = TimmPredictor.predict

    def small_card(self, images):
        sizes.append(len(images))
        if len(images) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 54.93 GiB")
        return real(self, images)

    monkeypatch.setattr(TimmPredictor, "predict", small_card)
    with caplog.at_level("WARNING", logger="miqd.infer"):
        got = _run(oom_shard, [spec], "oom", infer.InferSettings(device="cpu", batch_size=8, workers=0,
                                                                chunk_size=16, threads=1))
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) <= {1, 2}  # halved once per failure, then kept
    assert "model oom_net: out of memory on cpu with 8 images per forward pass; retrying with 4" in caplog.text
    a, b = pd.read_parquet(ref.path[0]), pd.read_parquet(got.path[0])
    pd.testing.assert_frame_equal(a.drop(columns="top5_probs"), b.drop(columns="top5_probs"))
    np.testing.assert_allclose(np.stack(a.top5_probs), np.stack(b.top5_probs), atol=1e-6)
    run_meta = json.loads(pq.read_schema(got.path[0]).metadata[b"miqd.run"])
    assert run_meta["batch_size"] == 2 and run_meta["device"] == "cpu"

    def no_card(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(TimmPredictor, "predict", no_card)
    with pytest.raises(InputError, match=r"model 'tiny_card': out of memory on cpu with one image per forward pass"):
        _run(oom_shard, [cls_spec("tiny_card")], "none")
