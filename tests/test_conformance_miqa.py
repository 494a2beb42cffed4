"""miqd against the authors' MIQA code: their loaders read our export, their checkpoints score in miqd.

Opt-in (MIQD_TEST_REFERENCE=1, and the mmdet extra for mmcv's ops; CI opts in): see
tests/conformance/refenv.py for where MIQA is looked for and the environment it runs in. Without it
these tests skip and say why; tests/test_miqa_checkpoints.py then checks the same loading against
the committed key layout of MIQA's checkpoints (tests/fixtures/miqa/checkpoint_keys.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conformance import refenv
from miqd import layout
from miqd.train.data import pipeline_samples
from miqd.train.networks import RegionEncoder
from miqd.train.score_images import score_images

FIXTURE = Path(__file__).parent / "fixtures" / "miqa" / "checkpoint_keys.json"
EXPORT = Path(__file__).parent / "fixtures" / "miqa" / "export"


@pytest.fixture(scope="module")
def miqa():
    try:
        return refenv.miqa()
    except refenv.Unavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def images(tmp_path_factory, demo_images):
    """Demo photos of several sizes and shapes, PNG and JPEG, as a user would score them."""
    folder = tmp_path_factory.mktemp("miqa_images")
    paths = []
    for i, (key, crop) in enumerate([("demo_val_00000001", np.s_[:, :]), ("000000000002", np.s_[40:300, 10:200]),
                                     ("demo_val_00000003", np.s_[:250, :250]), ("000000000003", np.s_[:, :])]):
        path = folder / f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(demo_images[key][crop]).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# their dataset classes over the demo's export


def _their_samples(miqa, out: Path) -> dict:
    splits = {d: layout.split_upstream(str(out), d) for d in ("imagenet", "coco")}
    tasks = {"cls": {"root": str(out / "miqa_cls"), "splits": splits["imagenet"]},
             "det": {"root": str(out / "miqa_det"), "splits": splits["coco"]},
             "ins": {"root": str(out / "miqa_ins"), "det_root": str(out / "miqa_det"), "splits": splits["coco"]}}
    return miqa.call("datasets", tasks=tasks)


def _check_samples(theirs: dict, ours_root: Path, theirs_root: Path) -> None:
    """Their samples of every task, split and metric type against miqd's label and split tables."""
    for task in ("cls", "det", "ins"):
        shards = sorted(p.stem.removeprefix("shard-") for p in (ours_root / "label" / task).glob("*.parquet"))
        ours = pipeline_samples(str(ours_root), task, shards)
        ours["path"] = [str(theirs_root / Path(p).relative_to(ours_root)) for p in ours["path"]]
        for split in ("train", "val"):
            want = ours[ours["split"] == split].set_index("path")
            assert len(want) > 0
            for metric in ("consistency", "accuracy", "composite"):
                got = theirs[f"{task}/{split}/{metric}"]
                # every distorted image of the split found (their cls loader skips missing ones silently)
                assert sorted(got["paths"]) == sorted(want.index), f"{task} {split} {metric}"
                labels = pd.Series(got["labels"], index=got["paths"])[want.index]
                if metric == "composite":  # theirs: 0.5 C + 0.5 A of the CSV's 6-decimal values
                    expected = 0.5 * want["consistency"].round(6) + 0.5 * want["accuracy"].round(6)
                else:
                    expected = want[metric]
                np.testing.assert_allclose(labels.to_numpy(), expected.to_numpy(), atol=5.1e-7)
                sources = pd.Series(got["sources"], index=got["paths"])[want.index]
                assert all(Path(s).stem == Path(p).parent.name for s, p in zip(sources, want.index, strict=True))
                assert all(Path(s).exists() for s in set(sources))
            if task == "cls":  # the ImageNet class names of the split CSV come through as categories
                cats = pd.Series(got["categories"], index=got["paths"])[want.index]
                assert (cats != "nan").all()
                means = pd.DataFrame(got["metrics"], index=got["paths"])
                assert ((means["mean_consistency"] >= 0) & (means["mean_consistency"] <= 1)).all()


def test_their_loaders_read_the_committed_tiny_export(miqa, tmp_path):
    import miqa_fixture

    built = tmp_path / "out"
    miqa_fixture.build(built)
    _check_samples(_their_samples(miqa, EXPORT), built, EXPORT)


@pytest.mark.slow
def test_their_loaders_read_the_demo_export_unchanged(miqa, demo_run):
    _check_samples(_their_samples(miqa, demo_run), demo_run, demo_run)


# ---------------------------------------------------------------------------------------------
# their checkpoints


@pytest.fixture(scope="module")
def published(miqa, images, tmp_path_factory):
    """Each of MIQA's models built by their code with random weights, saved in their train.py
    format, and scored by their own inference class."""
    return miqa.call("checkpoints", workdir=str(tmp_path_factory.mktemp("miqa_ckpt")), task="cls",
                     metric="composite", images=[str(p) for p in images])


def test_their_checkpoints_score_the_same_in_miqd(published, images, capsys):
    for name, entry in published.items():
        df, failed = score_images(entry["file"], images)
        assert not failed
        ours = df.set_index("path").loc[[str(p) for p in images], "score"].to_numpy()
        diff = np.abs(ours - np.array(entry["scores"]))
        print(f"{name}: |miqd - MIQA| max {diff.max():.2e} over {len(images)} images "
              f"(scores {np.round(entry['scores'], 4).tolist()})")
        assert diff.max() < 1e-4, name
        assert set(df["task"]) == {"cls"} and set(df["label"]) == {"composite"}
    assert "ra_miqa" in capsys.readouterr().out


def test_the_committed_key_layout_is_their_checkpoints(published):
    """The fixture the default suite loads synthetic checkpoints from is what their code writes."""
    committed = json.loads(FIXTURE.read_text())
    for name, entry in published.items():
        assert committed["models"][name]["keys"] == entry["keys"], f"{name}: update {FIXTURE}"
        assert committed["models"][name]["top_level"] == entry["top_level"]


def test_training_starts_from_their_checkpoint(published):
    from miqd.train.networks import create_quality_model

    entry = published["ra_miqa"]
    model = create_quality_model("ra_miqa", {"file": entry["file"]}, region_arch="vit_small_patch16_224",
                         region_weights="random")
    raw = torch.load(entry["file"], map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.quality_regressor[3].weight, raw["module.quality_regressor.3.weight"])
    assert torch.equal(model.mask_encoder.net.blocks[4].attn.qkv.weight,
                       raw["module.mask_encoder.layers.4.attn.attn.in_proj_weight"])
    assert torch.equal(model.pos_embed, raw["module.pos_embed"])


# ---------------------------------------------------------------------------------------------
# the paper's region encoder: SERE ViT-S/16, as MIQA reads it


def test_sere_region_encoder_features_match_their_mask_encoder(miqa, images, tmp_path):
    got = miqa.call("region_features", workdir=str(tmp_path), images=[str(p) for p in images[:3]])
    from miqd.io import read_image
    from miqd.train.transforms import Preprocess

    prep = Preprocess(288, 224, 288)
    batch = torch.stack([torch.from_numpy(prep(read_image(p))[1]) for p in images[:3]])
    for final, entry in got.items():
        theirs = torch.tensor(entry["features"])
        for weights in ({"file": entry["sere"], "key_map": "sere"}, {"file": entry["mmseg"]}):
            enc = RegionEncoder("vit_small_patch16_224", weights)
            ours = enc(batch)
            err = (ours - theirs).abs().max().item()
            print(f"SERE final norm from {final}, {Path(weights['file']).name}: max |diff| {err:.2e}")
            assert err < 1e-4, (final, weights)
