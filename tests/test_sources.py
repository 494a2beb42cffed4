"""Embedded demo data, dataset readers, shards and the select stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import DEMO, REPO
from miqd import select, sources
from miqd.errors import InputError
from miqd.io import read_image

UPSTREAM = REPO / "resources" / "upstream"


def test_demo_photos_materialise_at_the_committed_sizes_reproducibly(demo_dirs, tmp_path):
    for dataset, folder in demo_dirs.items():
        spec = yaml.safe_load((DEMO / dataset / "sources.yaml").read_text())
        assert len(spec["images"]) >= (6 if dataset == "imagenet" else 2)
        for entry in spec["images"]:
            with Image.open(folder / entry["file"]) as im:
                assert im.mode == "RGB" and list(im.size) == entry["size"]
        again = sources.materialize_demo(DEMO / dataset / "sources.yaml", tmp_path / dataset)
        for p in again:
            assert p.read_bytes() == (folder / p.name).read_bytes()


def test_demo_class_ids_are_real_imagenet_classes():
    upstream = dict(sources.read_imagenet_ground_truth(UPSTREAM / "ground_truth_ilsvrc2012_val.txt"))
    demo = sources.read_imagenet_ground_truth(DEMO / "imagenet" / "ground_truth.txt")
    assert len(demo) >= 6
    for index, name in demo:
        assert upstream[index] == name
    assert len({i for i, _ in demo}) == len(demo)  # one class per photo


def _check_polygons(coco: COCO):
    for ann in coco.dataset["annotations"]:
        img = coco.imgs[ann["image_id"]]
        pts = np.concatenate([np.reshape(p, (-1, 2)) for p in ann["segmentation"]])
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= img["width"]
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= img["height"]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], img["height"], img["width"]))
        assert ann["area"] == pytest.approx(float(mask_utils.area(rle)))


def test_demo_cls_roi_polygons_one_main_object_per_photo():
    coco = COCO(str(DEMO / "imagenet" / "roi_polygons.json"))
    gt = sources.read_imagenet_ground_truth(DEMO / "imagenet" / "ground_truth.txt")
    assert len(coco.imgs) == len(gt)
    for i, (index, _) in enumerate(gt, start=1):
        img = next(im for im in coco.imgs.values() if im["file_name"] == f"demo_val_{i:08d}.png")
        anns = coco.imgToAnns[img["id"]]
        assert len(anns) == 1 and anns[0]["category_id"] == index
        frac = anns[0]["area"] / (img["width"] * img["height"])
        assert 0.01 < frac < 0.95  # an object, not the whole frame
    _check_polygons(coco)


def test_demo_coco_ground_truth_uses_coco_categories():
    coco = COCO(str(DEMO / "coco" / "instances_demo.json"))
    names_file = Path(importlib.util.find_spec("ultralytics").submodule_search_locations[0])
    names = list(yaml.safe_load((names_file / "cfg/datasets/coco.yaml").read_text())["names"].values())
    assert [c["name"] for c in coco.dataset["categories"]] == names
    ids = [c["id"] for c in coco.dataset["categories"]]
    assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and 12 not in ids  # COCO's 91-id space
    spec = yaml.safe_load((DEMO / "coco" / "sources.yaml").read_text())
    for entry in spec["images"]:
        img = next(im for im in coco.imgs.values() if im["file_name"] == entry["file"])
        assert [img["width"], img["height"]] == entry["size"]
        assert coco.imgToAnns[img["id"]], f"{entry['file']} has no annotation"
    cats = {coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]}
    assert {"person", "tie", "motorcycle"} <= cats
    _check_polygons(coco)


def test_imagenet_candidates_follow_the_ground_truth_file_order():
    src = {"images": "/data/val", "ground_truth": str(UPSTREAM / "ground_truth_ilsvrc2012_val.txt"),
           "filename_template": "ILSVRC2012_val_{index:08d}.JPEG"}
    cands = sources.imagenet_candidates(src)
    assert len(cands) == 50_000
    first = cands.iloc[0]
    assert first.image_id == "ILSVRC2012_val_00000001" and first.class_index == 65
    assert first.path == "/data/val/ILSVRC2012_val_00000001.JPEG"


def test_shards_partition_the_classes_without_splitting_one():
    src = {"images": "/data/val", "ground_truth": str(UPSTREAM / "ground_truth_ilsvrc2012_val.txt"),
           "filename_template": "ILSVRC2012_val_{index:08d}.JPEG"}
    cands = sources.imagenet_candidates(src)
    parts = [sources.shard_members("imagenet", cands, 100, k) for k in range(100)]
    assert sum(len(p) for p in parts) == 50_000
    assert all(p.class_index.nunique() == 10 for p in parts)
    seen = [set(p.class_index) for p in parts]
    assert set().union(*seen) == set(range(1000))
    assert sum(len(s) for s in seen) == 1000
    with pytest.raises(InputError, match="shard 100 is out of range 0..99"):
        sources.shard_members("imagenet", cands, 100, 100)


def test_upstream_top5_list_selects_five_per_class_in_every_shard():
    src = {"images": "/data/val", "ground_truth": str(UPSTREAM / "ground_truth_ilsvrc2012_val.txt"),
           "filename_template": "ILSVRC2012_val_{index:08d}.JPEG"}
    cands = sources.imagenet_candidates(src)
    cfg = {"method": "list", "list": str(UPSTREAM / "top_5_quality_images_per_category.csv")}
    total = 0
    for k in (0, 37, 99):
        shard = sources.shard_members("imagenet", cands, 100, k)
        chosen = shard[select.METHODS.get("list")(shard, cands, cfg)]
        assert chosen.groupby("class_index").size().tolist() == [5] * 10
        total += len(chosen)
    assert total == 150


def test_list_naming_an_unknown_image_is_an_error(tmp_path):
    src = {"images": "/data/val", "ground_truth": str(DEMO / "imagenet" / "ground_truth.txt"),
           "filename_template": "demo_val_{index:08d}.png"}
    cands = sources.imagenet_candidates(src)
    lst = tmp_path / "list.txt"
    lst.write_text("demo_val_00000001.png\nnope.png\n")
    with pytest.raises(InputError, match=r"names 1 images that are not candidates .*nope\.png"):
        select.METHODS.get("list")(cands, cands, {"list": str(lst)})


def test_coco_candidates_are_the_annotated_images(tmp_path):
    data = json.loads((DEMO / "coco" / "instances_demo.json").read_text())
    data["images"].append({"id": 77, "file_name": "000000000077.png", "width": 10, "height": 10})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    cands = sources.coco_candidates({"images": "imgs", "annotations": str(path)})
    assert cands.image_id.tolist() == ["000000000001", "000000000002", "000000000003"]
    assert cands.categories.tolist()[0] == [1, 32]


def test_select_stage_writes_the_shard_table(demo_dirs, tmp_path):
    cfg = {"sources": {"imagenet": {"images": str(demo_dirs["imagenet"]),
                                    "ground_truth": str(DEMO / "imagenet" / "ground_truth.txt"),
                                    "filename_template": "demo_val_{index:08d}.png", "shards": 2}},
           "select": {"imagenet": {"method": "all"}}}
    from miqd.config import validate

    cfg = validate(cfg, whole_workflow=False)
    out = tmp_path / "s.parquet"
    table = select.run(cfg, "imagenet", 1, str(out))
    back = pd.read_parquet(out)
    # shard 1 of 2 holds classes 657, 698, 967 (of 281 652 654 657 698 967); rows in file order
    assert back.image_id.tolist() == ["demo_val_00000002", "demo_val_00000003", "demo_val_00000005"]
    assert back.selected.all()
    assert back.class_index.tolist() == [967, 657, 698]
    assert (back.width.tolist(), back.height.tolist()) == ([500, 500, 500], [333, 334, 334])
    assert table.shape[0] == 3


def test_grayscale_sources_are_converted_not_dropped(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(gray)
    rgb = read_image(gray)
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
