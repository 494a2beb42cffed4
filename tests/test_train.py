"""Stage 8 training: models, data readers, the loop (loss falls, resume is exact, encoder frozen)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from miqd import layout
from miqd.errors import InputError
from miqd.io import write_table
from miqd.train import data, files, loop, losses, networks
from miqd.train.networks import (
    RegionEncoder,
    create_quality_model,
    parameter_counts,
)
from miqd.train.transforms import Preprocess
from train_helpers import region_checkpoint, tiny_photos, train_config, write_pipeline, write_published


@pytest.fixture(scope="module")
def photos(demo_images):
    return tiny_photos(demo_images)


@pytest.fixture(scope="module")
def region_weights(tmp_path_factory):
    return region_checkpoint(tmp_path_factory.mktemp("ckpt") / "lite0.pth")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("pipeline") / "out"
    write_pipeline(out, photos)
    return out


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# models


def test_parameter_counts_ra_miqa_and_baselines(region_weights, capsys):
    import torchvision

    model = create_quality_model("ra_miqa", img_size=224, region_arch="tf_efficientnet_lite0", region_weights=region_weights)
    counts = parameter_counts(model)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0)
    enc = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    d, dr, tokens = 384, 1280, 1 + 14 * 14
    region_proj = dr * d + d + 2 * d  # Linear(D_r -> D) + LayerNorm(D)
    head = 2 * d * d + d + d + 1  # Linear(2D -> D), Linear(D -> 1)
    print(f"RA-MIQA: {counts}; ViT-S/16 {n(vit)}, region projection {region_proj}, head {head}, "
          f"region position embedding {d}, frozen encoder {n(enc)}")
    # the backbone's pos_embed (1 + 196 rows) is replaced by one with a row for the region token
    assert counts["trainable"] == n(vit) - tokens * d + (tokens + 1) * d + region_proj + head == 22_454_401
    assert counts["frozen"] == n(enc)
    assert all(not p.requires_grad for p in model.mask_encoder.parameters())
    refs = {"vit_small": timm.create_model("vit_small_patch16_224", num_classes=1)}
    for arch in ("resnet18", "resnet50"):
        refs[arch] = torchvision.models.get_model(arch, num_classes=1)
    for arch in ("efficientnet_b1", "efficientnet_b5"):  # MIQA: classifier -> one Linear, no dropout
        net = torchvision.models.get_model(arch)
        refs[arch] = n(net) - n(net.classifier) + net.classifier[-1].in_features + 1
    for name, ref in refs.items():
        c = parameter_counts(create_quality_model(name, img_size=224))
        ref = ref if isinstance(ref, int) else n(ref)
        print(f"{name}: {c['trainable']} parameters")
        assert c == {"trainable": ref, "frozen": 0, "total": ref}
    assert "RA-MIQA" in capsys.readouterr().out


def test_ra_miqa_forward_uses_region_token_and_class_token(region_weights):
    model = create_quality_model("ra_miqa", img_size=32, region_arch="tf_efficientnet_lite0",
                         region_weights=region_weights).eval()
    assert model.pos_embed.shape == (1, 2 + 4, 384)  # [region; class; 2x2 patches]
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    r = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x, r)
        other_region = model(x, torch.flip(r, dims=(0,)))
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert not torch.allclose(out, other_region)  # the score depends on the region branch


def test_checkpoints_load_through_the_weights_code(tmp_path, region_weights):
    enc = RegionEncoder("tf_efficientnet_lite0", region_weights)
    saved = torch.load(region_weights["file"], weights_only=True)
    for key, value in enc.net.state_dict().items():
        assert torch.equal(value, saved[key]), key  # classifier dropped, everything else loaded
    # an ImageNet ViT-S checkpoint (1000 classes, 224) into RA-MIQA at 32: pos embed resampled
    torch.manual_seed(3)
    vit = timm.create_model("vit_small_patch16_224")
    torch.save({"state_dict": vit.state_dict()}, tmp_path / "vit.pth")
    model = create_quality_model("ra_miqa", {"file": str(tmp_path / "vit.pth")}, img_size=32,
                         region_arch="tf_efficientnet_lite0", region_weights=region_weights)
    assert torch.equal(model.base_model.blocks[3].mlp.fc1.weight, vit.blocks[3].mlp.fc1.weight)
    assert torch.equal(model.base_model.cls_token, vit.cls_token)
    assert model.base_model.pos_embed.shape[1] == 5 and model.pos_embed.shape[1] == 6
    # a baseline keeps the backbone and gets a fresh one-output head
    torch.manual_seed(4)
    r18 = timm.create_model("resnet18")
    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    base = create_quality_model("resnet18", {"file": str(tmp_path / "r18.pth")})
    assert torch.equal(base.net.layer2[0].conv1.weight, r18.layer2[0].conv1.weight)
    assert base.net.fc.weight.shape == (1, 512)
    # a self-supervised ViT-S/16 (DINO / SERE style: teacher, module.backbone. prefixes, a projection
    # head) as the region encoder at 288: key_map dino, position embeddings resampled
    torch.manual_seed(5)
    dino = timm.create_model("vit_small_patch16_224", num_classes=0)
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in dino.state_dict().items()}
                | {"module.head.mlp.0.weight": torch.zeros(2, 2)}, "epoch": 100}, tmp_path / "sere.pth")
    enc = RegionEncoder("vit_small_patch16_224", {"file": str(tmp_path / "sere.pth"), "key_map": "dino"}, size=64)
    assert torch.equal(enc.net.blocks[5].attn.qkv.weight, dino.blocks[5].attn.qkv.weight)
    assert enc(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (2, 384) and enc.dim == 384
    with pytest.raises(InputError, match=r"train\.region_encoder\.weights: weights file .*missing\.pth does not exist; "
                                         r"fix train\.region_encoder\.weights\.file"):
        RegionEncoder("tf_efficientnet_lite0", {"file": str(tmp_path / "missing.pth")})
    with pytest.raises(InputError, match=r"does not fit architecture 'resnet50'"):
        create_quality_model("resnet50", {"file": str(tmp_path / "r18.pth")})
    with pytest.raises(InputError, match=r"unknown quality model 'alexnet'; known: ra_miqa"):
        create_quality_model("alexnet")


# ---------------------------------------------------------------------------------------------
# small pure pieces


def test_schedule_and_validation_points():
    f = [loop.lr_factor(s, 100, 10, 0.0) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5) and f[99] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert loop.eval_steps(10, 3, 2) == {5, 10, 15, 20, 25, 30}
    assert loop.eval_steps(3, 1, 2) == {2, 3}


def test_losses_against_their_definitions():
    p = torch.tensor([0.1, 0.4, 0.35, 0.8])
    y = torch.tensor([0.2, 0.5, 0.3, 0.9])
    r = np.corrcoef(p.numpy(), y.numpy())[0, 1]
    assert losses.get_loss("mse")(p, y).item() == pytest.approx(float(np.mean((p.numpy() - y.numpy()) ** 2)))
    assert losses.get_loss("plcc")(p, y).item() == pytest.approx((1 - r) / 2, abs=1e-6)
    assert losses.get_loss("plcc")(2 * p + 1, y).item() == pytest.approx((1 - r) / 2, abs=1e-6)
    nin = losses.get_loss("norm_in_norm")
    assert nin(y * 3 + 2, y).item() == pytest.approx(0.0, abs=1e-6)
    a = (y - y.mean()) / (y - y.mean()).norm()
    assert nin(-y, y).item() == pytest.approx((a.abs().sum() / 2).item(), abs=1e-6)  # 2||a||_1 / (2 sqrt(4))
    assert 0 < nin(p, y).item() < nin(-y, y).item() <= 1
    with pytest.raises(InputError, match="unknown loss 'l1'"):
        losses.get_loss("l1")


def test_preprocess_crops_flips_and_region():
    img = np.arange(60 * 80 * 3, dtype=np.uint32).reshape(60, 80, 3).astype(np.uint8)
    ev = Preprocess(resize=30, crop=24, region=28, train=False)
    crop, region = ev(img)
    assert crop.shape == (3, 24, 24) and region.shape == (3, 28, 28)
    assert crop.dtype == np.uint8
    train = Preprocess(resize=30, crop=24, region=28, train=True)
    a = train(img, np.random.default_rng(0))[0]
    b = train(img, np.random.default_rng(0))[0]
    assert np.array_equal(a, b)
    seen = {train(img, np.random.default_rng(s))[0].tobytes() for s in range(8)}
    assert len(seen) > 1
    with pytest.raises(ValueError, match="must not exceed"):
        Preprocess(resize=30, crop=32)


# ---------------------------------------------------------------------------------------------
# data


def test_pipeline_samples_join_labels_and_split(pipeline_dir):
    df = data.pipeline_samples(str(pipeline_dir), "cls", ["000"])
    assert list(df.columns) == data.SAMPLE_COLUMNS
    assert len(df) == 4 * 2 * 7 and set(df["split"]) == {"train", "val"}
    assert (df.groupby("image_id")["split"].nunique() == 1).all()  # by source: no content leaks
    assert df["path"].map(lambda p: p.startswith(str(pipeline_dir))).all()
    ds = data.QualityDataset(df, "composite", Preprocess(36, 32, 32, train=False))
    item = ds[(0, 3)]
    assert item["image"].shape == (3, 32, 32) and item["region"].shape == (3, 32, 32)
    assert item["target"].item() == pytest.approx(df["composite"].iloc[3])


def test_pipeline_reader_errors_name_the_file(tmp_path, pipeline_dir):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(pipeline_dir, out)
    split_path = layout.split_table(str(out), "imagenet")
    split = pd.read_parquet(split_path)
    write_table(split_path, split.iloc[1:])
    with pytest.raises(InputError, match=r"split table .*imagenet\.parquet has no split for 1 labelled source"):
        data.pipeline_samples(str(out), "cls", ["000"])
    label_path = layout.label_table(str(out), "cls", "000")
    write_table(label_path, pd.read_parquet(label_path).drop(columns=["composite"]))
    with pytest.raises(InputError, match=r"label table .*shard-000\.parquet lacks columns composite"):
        data.pipeline_samples(str(out), "cls", ["000"])
    with pytest.raises(InputError, match=r"label/det/shard-001\.parquet does not exist"):
        data.pipeline_samples(str(out), "det", ["001"])


def test_published_layout_reads_into_the_same_table(tmp_path, photos):
    root = tmp_path / "MIQD_2.5M"
    ids = write_published(root, photos)
    cls = data.published_samples("cls", str(root), str(root / "splits"), composite_lambda=0.5)
    assert list(cls.columns) == data.SAMPLE_COLUMNS
    assert len(cls) == 4 * 14 and set(cls["image_id"]) == set(ids["cls"])
    row = cls[(cls.image_id == ids["cls"][0]) & (cls.corruption == "gaussian_noise") & (cls.roi_level == 4)
              & (cls.bg_level == 1)].iloc[0]
    assert row["region_type"] == "ROI-DD" and row["split"] == "train"
    assert row["consistency"] == pytest.approx(0.6) and row["accuracy"] == pytest.approx(1 - 0.05 - 0.4)
    assert row["composite"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.55)
    assert row["path"].endswith(f"miqa_cls/images/{ids['cls'][0]}/{ids['cls'][0]}_gaussian_noise_fg_stronger_fg4_bg1.png")
    assert row["src_path"].endswith(f"{ids['cls'][0]}.JPEG") and np.isnan(row["psnr"])
    ud = cls[(cls.roi_level == cls.bg_level)]
    assert (ud["region_type"] == "UD").all() and len(ud) == 4 * 2 * 5
    assert set(cls.loc[cls.image_id == ids["cls"][-1], "split"]) == {"val"}
    # det and ins share images; their labels differ (miqa_ins/labels), matched by file name
    det = data.published_samples("det", str(root), str(root / "splits"), composite_lambda=0.25)
    ins = data.published_samples("ins", str(root), str(root / "splits"), composite_lambda=0.25)
    assert det["path"].tolist() == ins["path"].tolist()
    assert np.allclose(ins["accuracy"], 0.9 * det["accuracy"], atol=1e-4)
    d = det[(det.corruption == "defocus_blur") & (det.roi_level == 2) & (det.bg_level == 2)].iloc[0]
    assert d["consistency"] == pytest.approx(0.8) and d["composite"] == pytest.approx(0.25 * 0.8 + 0.75 * 0.7)
    ds = data.QualityDataset(det, "composite", Preprocess(36, 32, None, train=True), seed=1)
    item = ds[(2, 5)]
    assert item["image"].shape == (3, 32, 32) and "region" not in item
    assert torch.equal(item["image"], ds[(2, 5)]["image"])  # same (epoch, row): same augmentation


@pytest.mark.parametrize("flat", [False, True], ids=["per-source-folders", "flat-images-folder"])
def test_training_on_the_published_layout(tmp_path, photos, region_weights, flat):
    """train.source published: the download's layout (generator names) trains for cls, det and ins."""
    root = tmp_path / "MIQD_2.5M"
    write_published(root, photos, flat=flat)
    runs = [{"model": "ra_miqa", "task": "cls", "label": "composite"},
            {"model": "resnet18", "task": "det", "label": "accuracy"},
            {"model": "resnet18", "task": "ins", "label": "consistency"}]
    config = train_config(tmp_path / "out", region_weights, runs=runs, epochs=1, source="published",
                          published={"root": str(root), "splits": str(root / "splits")})
    for run in ("ra_miqa_cls_composite", "resnet18_det_accuracy", "resnet18_ins_consistency"):
        best = loop.train(config, run)
        metrics = pd.read_csv(files.train_outputs(str(tmp_path / "out"), run)["metrics"])
        assert len(metrics) == 5 and np.isfinite(metrics["train_loss"]).all(), run  # 42 images // 8
        assert np.isfinite(best["srcc"]), run
    folder = root / "miqa_det" / "images"
    some = next(p for p in folder.rglob("*.png"))
    some.unlink()
    with pytest.raises(InputError, match=rf"1 of the 14 images \d+_accuracy\.csv names are in neither .*"
                                         rf"e\.g\. {some.name}; the download is incomplete"):
        data.published_samples("det", str(root), str(root / "splits"))
    src = next((root / "miqa_cls" / "src_images").iterdir())
    src.unlink()
    with pytest.raises(InputError, match=rf"src_images has no {src.stem}\.\* \(the source image of "
                                         rf"{src.stem}_mmos\.csv\); the download is incomplete"):
        data.published_samples("cls", str(root), str(root / "splits"))


def test_published_layout_errors(tmp_path, photos):
    root = tmp_path / "MIQD_2.5M"
    ids = write_published(root, photos)
    assert layout.parse_distorted_name("a_b", "a_b_jpeg_compression_fg_stronger_fg3_bg1.png") == (
        "jpeg_compression", 3, 1)
    assert layout.parse_distorted_name("a_b", "a_b_snow_bg_stronger_fg2_bg5.png") == ("snow", 2, 5)
    assert layout.parse_distorted_name("a_b", "a_b_motion_blur_4.png") == ("motion_blur", 4, 4)
    with pytest.raises(InputError, match=r"'x_contrast\.png' is neither <id>_<corruption>_<level>\.png"):
        layout.parse_distorted_name("x", "x_contrast.png")
    with pytest.raises(InputError, match=r"fg_stronger does not fit ROI level 1 and background level 3"):
        layout.parse_distorted_name("x", "x_fog_fg_stronger_fg1_bg3.png")
    with pytest.raises(InputError, match=r"is neither"):
        layout.parse_distorted_name("x", "x_fog_3_1.png")  # miqd's names before it took the generator's
    (root / "miqa_cls" / "labels" / f"{ids['cls'][1]}_mmos.csv").unlink()
    with pytest.raises(InputError, match=rf"{ids['cls'][1]}_mmos\.csv does not exist"):
        data.published_samples("cls", str(root), str(root / "splits"))
    with pytest.raises(InputError, match=r"miqa_det_train\.csv does not exist; point train\.published\.splits"):
        data.published_samples("det", str(root), str(tmp_path))
    with pytest.raises(InputError, match="must be the MIQD-2.5M root"):
        data.published_samples("cls", str(tmp_path / "nowhere"), str(root / "splits"))


# ---------------------------------------------------------------------------------------------
# the training loop


def test_training_lowers_the_loss_and_keeps_the_encoder_frozen(tmp_path, pipeline_dir, region_weights):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(pipeline_dir, out)
    config = train_config(out, region_weights)
    best = loop.train(config, "ra_miqa_cls_composite")
    outputs = files.train_outputs(str(out), "ra_miqa_cls_composite")
    metrics = pd.read_csv(outputs["metrics"])
    losses_ = metrics["train_loss"].to_numpy()
    assert len(losses_) == 10  # 2 epochs x 42 training images // 8 per step, logged every step
    assert losses_[-3:].mean() < 0.5 * losses_[0]
    assert metrics["val_srcc"].notna().sum() == 4  # twice per epoch
    assert np.isfinite(best["srcc"]) and 0 < best["step"] <= 10
    ckpt = _state(outputs["model"])
    assert ckpt["backbone_init"].startswith("seeded random") and "lite0.pth" in ckpt["region_init"]
    assert ckpt["step"] == best["step"] and metrics.loc[metrics["best"] == 1, "step"].iloc[-1] == best["step"]
    saved = torch.load(region_weights["file"], weights_only=True)
    for key, value in ckpt["state_dict"].items():
        if key.startswith("mask_encoder.net."):
            assert torch.equal(value, saved[key.removeprefix("mask_encoder.net.")]), key
    model, _ = networks.load_quality_model(outputs["model"])
    assert all(not p.requires_grad for p in model.mask_encoder.parameters())
    assert not (out / "train" / "ra_miqa_cls_composite" / "work").exists()  # finished: resume files gone
    png = outputs["plot"]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_resume_after_a_kill_ends_identical(tmp_path, pipeline_dir, region_weights, monkeypatch, caplog):
    import shutil

    run = "resnet18_det_accuracy"
    runs = [{"model": "resnet18", "task": "det", "label": "accuracy"}]
    ref_out, kill_out = tmp_path / "ref", tmp_path / "kill"
    for d in (ref_out, kill_out):
        shutil.copytree(pipeline_dir, d)
    loop.train(train_config(ref_out, region_weights, runs=runs), run)

    class Killed(Exception):
        pass

    def kill_at_7(step):
        if step == 7:
            raise Killed

    monkeypatch.setattr(loop, "after_step", kill_at_7)
    config = train_config(kill_out, region_weights, runs=runs)
    with pytest.raises(Killed):
        loop.train(config, run)
    last = _state(kill_out / "train" / run / "work" / "last.pt")
    assert last["step"] == 6  # checkpoint_every 2 (and the validation at step 6)
    assert not (kill_out / "train" / run / "model.pt").exists()
    steps = []
    monkeypatch.setattr(loop, "after_step", steps.append)
    with caplog.at_level("INFO", logger="miqd.train"):
        loop.train(config, run)
    assert steps[0] == 7 and steps[-1] == 10  # continued from the saved step
    assert "resuming from" in caplog.text and "at step 6/10" in caplog.text
    a, b = (files.train_outputs(str(d), run) for d in (ref_out, kill_out))
    assert open(a["metrics"], "rb").read() == open(b["metrics"], "rb").read()
    assert open(a["model"], "rb").read() == open(b["model"], "rb").read()  # same config, same bytes
    sa, sb = _state(a["model"]), _state(b["model"])
    assert sa["step"] == sb["step"]
    for key in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][key], sb["state_dict"][key]), key


def test_stale_resume_state_is_not_used(tmp_path, pipeline_dir, region_weights, monkeypatch, caplog):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(pipeline_dir, out)
    run = "resnet18_cls_composite"
    runs = [{"model": "resnet18", "task": "cls", "label": "composite"}]

    def kill(step):
        if step == 3:
            raise RuntimeError("killed")

    monkeypatch.setattr(loop, "after_step", kill)
    with pytest.raises(RuntimeError):
        loop.train(train_config(out, region_weights, runs=runs), run)
    monkeypatch.setattr(loop, "after_step", lambda step: None)
    with caplog.at_level("INFO", logger="miqd.train"):
        loop.train(train_config(out, region_weights, runs=runs, lr=5e-4), run)  # settings changed
    assert "is from other settings or data; starting afresh" in caplog.text


def test_config_errors_name_the_key(tmp_path, pipeline_dir, region_weights):
    from miqd.errors import ConfigError

    config = train_config(pipeline_dir, region_weights, runs=[{"model": "resnet50", "task": "cls"}])
    with pytest.raises(InputError, match=r"key train\.models\.resnet50\.weights is required"):
        loop.train(config, "resnet50_cls_composite")
    with pytest.raises(InputError, match=r"no training run 'ra_miqa_ins_composite' in train\.runs"):
        loop.train(config, "ra_miqa_ins_composite")
    with pytest.raises(ConfigError, match=r"train\.runs\[0\]\.model: 'alexnet' is not one of"):
        train_config(pipeline_dir, region_weights, runs=[{"model": "alexnet", "task": "cls"}])
    with pytest.raises(InputError, match=r"batch_size 64 is larger than the 42 training images per epoch"):
        loop.train(train_config(pipeline_dir, region_weights, batch_size=64, samples_per_epoch=None),
                   "ra_miqa_cls_composite")


def test_distributed_training_under_torchrun(tmp_path, pipeline_dir, region_weights):
    """train.gpus > 1 relaunches `miqd train` under torchrun; on a CPU the processes talk over gloo,
    so the DistributedDataParallel path (batch shares, gathered validation, rank-0 files) runs here."""
    import shutil
    import subprocess
    import sys

    from helpers import snakemake_env

    out = tmp_path / "out"
    shutil.copytree(pipeline_dir, out)
    config = train_config(out, region_weights, runs=[{"model": "ra_miqa", "task": "cls", "label": "composite"}],
                          gpus=2, epochs=1)
    proc = subprocess.run([sys.executable, "-m", "miqd", "train", "--config", json.dumps(config),
                           "--run", "ra_miqa_cls_composite"], capture_output=True, text=True, timeout=600,
                          env=snakemake_env({"OMP_NUM_THREADS": "1"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = pd.read_csv(files.train_outputs(str(out), "ra_miqa_cls_composite")["metrics"])
    assert len(metrics) == 5 and metrics["val_srcc"].notna().sum() == 2
    assert proc.stderr.count("best validation SRCC") == 1  # rank 0 alone reports and writes


def test_constant_labels_train_with_a_warning(tmp_path, pipeline_dir, region_weights, caplog):
    """The demo's det labels come from random-weight detectors and are constant: training runs,
    says so, and keeps the latest checkpoint (SRCC is undefined at every validation)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(pipeline_dir, out)
    path = layout.label_table(str(out), "det", "000")
    write_table(path, pd.read_parquet(path).assign(composite=0.5))
    run = "resnet18_det_composite"
    with caplog.at_level("INFO", logger="miqd.train"):
        loop.train(train_config(out, region_weights, runs=[{"model": "resnet18", "task": "det"}], epochs=1), run)
    assert "every training label composite is 0.5: there is nothing to rank" in caplog.text
    metrics = pd.read_csv(files.train_outputs(str(out), run)["metrics"])
    assert metrics["val_srcc"].isna().all() and metrics["val_rmse"].notna().sum() == 2
    assert _state(files.train_outputs(str(out), run)["model"])["step"] == 5
