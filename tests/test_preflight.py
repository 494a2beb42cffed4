"""Inputs checked before any stage: each problem named with its file or key and the fix, all at once."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import REPO, demo_config, snakemake
from miqd import config as cfgmod
from miqd import preflight
from miqd.errors import ConfigError, InputError


def _demo(tmp_path, **edits) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["outdir"] = str(tmp_path / "out")
    for key, value in edits.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    return cfgmod.validate(cfg)


def _imagenet(tmp_path, gt_lines: int, images: int) -> dict:
    folder = tmp_path / "val"
    folder.mkdir(exist_ok=True)
    for i in range(1, images + 1):
        (folder / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"x")
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{i % 3},class {i % 3}\n" for i in range(gt_lines)))
    return {"images": str(folder), "ground_truth": str(gt), "shards": 1}


def test_the_demo_config_passes():
    preflight.run(cfgmod.load(REPO / "config" / "config.yaml"))


def test_ground_truth_empty_short_or_naming_missing_images(tmp_path):
    empty = preflight.check_imagenet(cfgmod.validate({"sources": {"imagenet": _imagenet(tmp_path, 0, 2)}},
                                                      whole_workflow=False)["sources"]["imagenet"])
    assert len(empty) == 1 and "gt.txt is empty" in empty[0]
    short = _imagenet(tmp_path, 3, 5)
    problems = preflight.check_imagenet(cfgmod.validate({"sources": {"imagenet": short}}, whole_workflow=False)
                                        ["sources"]["imagenet"])
    assert problems == [f"ground truth {short['ground_truth']} has 3 lines, but {short['images']} also holds 2 "
                        f"images after them: ILSVRC2012_val_00000004.JPEG, ILSVRC2012_val_00000005.JPEG; they would "
                        f"have no label (the ground truth is short, or from another set)"]
    (tmp_path / "b").mkdir()
    long = _imagenet(tmp_path / "b", 6, 0)
    problems = preflight.check_imagenet(cfgmod.validate({"sources": {"imagenet": long}}, whole_workflow=False)
                                        ["sources"]["imagenet"])
    assert "6 of the 6 images the ground truth" in problems[0] and "ILSVRC2012_val_00000001.JPEG" in problems[0]


def test_coco_without_annotations_or_with_dangling_ones(tmp_path):
    base = {"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "categories": []}
    (tmp_path / "none.json").write_text(json.dumps({**base, "annotations": []}))
    (tmp_path / "dangling.json").write_text(json.dumps({**base, "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
        {"id": 2, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}]}))
    (tmp_path / "img").mkdir()
    none = preflight.check_coco({"annotations": str(tmp_path / "none.json"), "images": str(tmp_path / "img")})
    assert none == [f"COCO annotation file {tmp_path / 'none.json'} has no annotations: no image would be a "
                    f"candidate (sources.coco.annotations)"]
    dangling = preflight.check_coco({"annotations": str(tmp_path / "dangling.json"), "images": str(tmp_path / "img")})
    assert "annotations point at 1 image ids that its 'images' list does not have: 99" in dangling[0]
    assert "1 annotated images of" in dangling[1] and "a.jpg" in dangling[1]


def test_registry_architecture_typos_and_missing_weights(tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [
        {"id": "typo", "task": "cls", "backend": "timm", "arch": "resnet5O", "weights": "random", "benchmark": 1.0},
        {"id": "nofile", "task": "cls", "backend": "timm", "arch": "resnet18",
         "weights": {"file": str(tmp_path / "missing.pth")}, "benchmark": 1.0},
        {"id": "det", "task": "det", "backend": "torchvision", "arch": "fasterrcnn_resnet_51", "weights": "random",
         "benchmark": 1.0},
    ]}))
    problems = preflight.check_registry(str(registry), ["cls", "det"])
    text = "\n".join(problems)
    assert f"model 'typo' (registry {registry}): timm" in text and "has no architecture 'resnet5O'" in text
    assert f"model 'nofile': weights file {tmp_path / 'missing.pth'} does not exist" in text
    assert "torchvision has no detection architecture 'fasterrcnn_resnet_51'" in text


def test_training_weights_and_region_encoder_name_their_config_keys(tmp_path):
    cfg = _demo(tmp_path)
    cfg["train"]["models"]["ra_miqa"] = {"weights": {"file": str(tmp_path / "vit.pth")}}
    cfg["train"]["region_encoder"]["arch"] = "tf_efficientnet_lite9"
    problems = preflight.check_training(cfg)
    assert problems == [
        f"train.models.ra_miqa.weights: weights file {tmp_path / 'vit.pth'} does not exist; fix "
        f"train.models.ra_miqa.weights.file or copy the checkpoint there",
        "train.region_encoder.arch: timm has no architecture 'tf_efficientnet_lite9'",
    ]


def test_all_problems_are_reported_together(tmp_path):
    cfg = _demo(tmp_path)
    cfg["sources"]["coco"]["annotations"] = str(tmp_path / "gone.json")
    cfg["roi"]["coco"]["annotations"] = str(tmp_path / "gone.json")
    cfg["train"]["region_encoder"]["arch"] = "nope"
    with pytest.raises(InputError, match=r"preflight: 3 problem\(s\) to fix before any stage runs") as err:
        preflight.run(cfg)
    assert str(tmp_path / "gone.json") in str(err.value) and "train.region_encoder.arch" in str(err.value)


def test_a_config_without_sources_is_refused_with_the_layering_that_works(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("distort: {threads: 1}\n")
    with pytest.raises(ConfigError, match=r"no source dataset is configured.*--configfile "
                                                  r"config/config\.yaml my-overrides\.yaml"):
        cfgmod.load(partial)
    proc = snakemake("-n", "--configfile", str(partial))
    assert proc.returncode != 0 and "no source dataset is configured" in proc.stdout + proc.stderr


def test_the_workflow_stops_at_the_preflight_before_any_stage(tmp_path):
    outdir = tmp_path / "out"
    path = demo_config(outdir)
    cfg = yaml.safe_load(path.read_text())
    registry = yaml.safe_load((REPO / "config" / "models_demo.yaml").read_text())
    registry["models"][0]["arch"] = "tf_efficientnet_lite7x"  # a typo
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(registry))
    cfg["infer"]["registry"] = str(tmp_path / "reg.yaml")
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("distorted", "--cores", "1", "--configfile", str(path))
    assert proc.returncode != 0
    log = (outdir / "logs" / "preflight" / "preflight.log").read_text()
    assert "model 'efficientnet_lite0'" in log and "no architecture 'tf_efficientnet_lite7x'" in log
    assert not (outdir / "select").exists() and not (outdir / "demo_sources").exists()
