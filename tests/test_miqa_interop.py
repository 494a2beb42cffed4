"""Interoperation with MIQA without its code: the committed fixtures stand in for it.

tests/fixtures/miqa/ was made by tests/conformance/make_miqa_fixtures.py with MIQA's own code and is
checked against it by tests/test_conformance_miqa.py (opt-in). Here: miqd still exports exactly
the export MIQA's loaders were shown to read, and checkpoints with exactly the key layout MIQA's
train.py writes load, are recognised and score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import miqa_fixture
from miqd import cli
from miqd.errors import InputError
from miqd.train import networks
from miqd.train.data import pipeline_samples, published_samples
from miqd.train.networks import create_quality_model
from miqd.train.score_images import score_images

FIXTURES = Path(__file__).parent / "fixtures" / "miqa"
LAYOUT = json.loads((FIXTURES / "checkpoint_keys.json").read_text())
MIQD_NAME = {"ra_miqa": "ra_miqa", "vit_small_patch16_224": "vit_small", "resnet18": "resnet18",
             "resnet50": "resnet50", "efficientnet_b1": "efficientnet_b1", "efficientnet_b5": "efficientnet_b5"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "out"
    miqa_fixture.build(out)
    return out


def test_the_export_is_byte_for_byte_the_one_miqa_reads(built):
    ours = miqa_fixture.exported_files(built)
    committed = {p.relative_to(FIXTURES / "export").as_posix(): p.read_bytes()
                 for p in sorted((FIXTURES / "export").rglob("*")) if p.is_file()}
    assert sorted(ours) == sorted(committed)
    assert [k for k in ours if ours[k] != committed[k]] == []
    # the cls label files name images under images/ (`<id>/<file>`), which MIQA's cls loader joins
    mmos = pd.read_csv(FIXTURES / "export" / "miqa_cls" / "labels" / "ILSVRC2012_val_00000007_mmos.csv")
    assert mmos["dist_images"].iloc[0].startswith("ILSVRC2012_val_00000007/ILSVRC2012_val_00000007_")
    assert (FIXTURES / "export" / "miqa_det" / "additional_info" / "instances_val2017.json").is_file()


@pytest.mark.parametrize("task", ["cls", "det", "ins"])
def test_the_committed_export_reads_back_as_the_label_tables(built, task):
    ours = pipeline_samples(str(built), task, ["000"])
    theirs = published_samples(task, str(FIXTURES / "export"), str(FIXTURES / "export" / "split"))
    key = ["image_id", "corruption", "roi_level", "bg_level", "region_type", "split"]
    pd.testing.assert_frame_equal(ours[key], theirs[key])
    for label in ("consistency", "accuracy"):  # the CSVs keep 6 decimals
        np.testing.assert_allclose(theirs[label], ours[label], atol=5.1e-7)
    assert [Path(p).name for p in theirs["path"]] == [Path(p).name for p in ours["path"]]


def _synthetic(name: str, path: Path, seed: int, extra: dict | None = None) -> None:
    """A checkpoint with exactly the layout of MIQA's for `name`, random values, saved as theirs."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in LAYOUT["models"][name]["keys"]:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        else:
            state[key] = 0.05 * torch.randn(shape, generator=g)
    raw = {"epoch": 3, "arch": name, "state_dict": state, "best_srcc": 0.91,
           "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]},
           "scheduler": {"t_initial": 100, "base_values": [1e-4]}} | (extra or {})
    assert sorted(raw) == sorted(LAYOUT["models"][name]["top_level"] + list(extra or {}))
    torch.save(raw, path)


@pytest.fixture(scope="module")
def photo(tmp_path_factory, demo_images):
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.fromarray(demo_images["demo_val_00000001"]).save(path, quality=92)
    return path


@pytest.mark.parametrize("name", list(LAYOUT["models"]))
def test_checkpoints_of_their_layout_load_and_score(tmp_path, photo, name):
    path = tmp_path / f"miqa_{name}_det_accuracy_metric.pth.tar"
    _synthetic(name, path, seed=len(name))
    model, info = networks.load_quality_model(path)
    assert info["model"] == MIQD_NAME[name] and info["source"] == "miqa"
    assert (info["task"], info["label"]) == ("det", "accuracy")  # read off MIQA's file name
    raw = {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    assert len(raw) == len(LAYOUT["models"][name]["keys"])  # saved by DDP: every key `module.`-prefixed
    ours = model.state_dict()
    for key in list(raw)[:: max(1, len(raw) // 40)]:  # tensors land where they belong
        mapped = next(k for k in (key, f"net.{key}") if k in ours) if not key.startswith("mask_encoder.") else None
        if mapped:
            assert torch.equal(ours[mapped], raw[key]), key
    df, failed = score_images(str(path), [photo])
    assert not failed and np.isfinite(df["score"]).all() and df["task"].iloc[0] == "det"


def test_training_starts_from_their_ra_miqa_checkpoint(tmp_path):
    path = tmp_path / "miqa_ra_miqa_cls_composite_metric.pth.tar"
    _synthetic("ra_miqa", path, seed=5)
    raw = {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    model = create_quality_model("ra_miqa", {"file": str(path)}, region_arch="vit_small_patch16_224", region_weights="random")
    assert torch.equal(model.quality_regressor[0].weight, raw["quality_regressor.0.weight"])
    assert torch.equal(model.mask_encoder.net.norm.weight, raw["mask_encoder.ln1.weight"])  # mmseg's final norm
    assert torch.equal(model.mask_encoder.net.blocks[2].attn.proj.bias,
                       raw["mask_encoder.layers.2.attn.attn.out_proj.bias"])
    with pytest.raises(InputError, match=r"train\.models\.resnet18\.weights: .* holds a ra_miqa checkpoint that "
                                         r"does not fit quality model resnet18"):
        create_quality_model("resnet18", {"file": str(path)})


def test_a_checkpoint_that_needs_pickle_is_refused_unless_trusted(tmp_path, photo, capsys):
    path = tmp_path / "miqa_resnet18_cls_composite_metric.pth.tar"
    _synthetic("resnet18", path, seed=2, extra={"args": argparse.Namespace(lr=1e-4)})
    with pytest.raises(InputError, match=r"holds pickled Python objects \(argparse\.Namespace\), which could run "
                                         r"code when loaded; miqd loads tensors only\. If you trust the file, opt "
                                         r"in with --trust-pickle"):
        networks.load_quality_model(path)
    assert cli.main(["score", str(photo), "--checkpoint", str(path)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli.main(["score", str(photo), "--checkpoint", str(path), "--trust-pickle", "--format", "csv"]) == 0
    assert "photo.jpg" in capsys.readouterr().out
