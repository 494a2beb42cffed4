"""The mmdet backend against a real MMDetection 3.3.0 on the CPU (optional extra: `make mmdet`).

Checkpoints are made here: a detector built by mmdet's own `init_detector` with seeded random
parameters, saved as mmdet saves them (a pickled dict with `meta` and `state_dict`), then loaded
through a registry entry like real weights. mmdet's own `inference_detector` on the same model is
the reference the backend's batched predictions must match. Without the extra these tests skip and
say so; with MIQD_WITH_MMDET=1 (as `.ci/run` sets) a missing extra is a failure instead.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from helpers import REPO
from miqd.errors import InputError
from miqd.models.backends import create_predictor
from miqd.models.backends import mmdet_backend
from miqd.models.coco import COCO_CATEGORIES, COCO_IDS
from miqd.models.registry import ModelSpec, load_registry

RTMDET_TINY = "configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py"
RTMDET_S = "configs/rtmdet/rtmdet_s_8xb32-300e_coco.py"
MASK_RCNN = "configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
# the test pipelines' scales once preprocess.size = 320 (RTMDet: 640x640 padded; Mask R-CNN 1333x800)
SCALED = {RTMDET_TINY: {"Resize": {"scale": (320, 320)}, "Pad": {"size": (320, 320)}},
          MASK_RCNN: {"Resize": {"scale": (320, 192)}}}


def _missing() -> str | None:
    try:
        mmdet_backend.require_mmdet()
    except InputError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def mmdet():
    reason = _missing()
    if reason and os.environ.get("MIQD_WITH_MMDET") == "1":
        pytest.fail(f"MIQD_WITH_MMDET=1 but the extra is not usable: {reason}")
    if reason:
        pytest.skip(f"the mmdet extra is not installed: {reason}")
    import mmdet

    assert mmdet.__version__ == mmdet_backend.MMDET_VERSION


def spec(**kw) -> ModelSpec:
    base = dict(id="m", task="det", backend="mmdet", arch=RTMDET_TINY, weights="random", benchmark=40.0,
                group="g", preprocess={"size": 320}, score_threshold=0.3, max_detections=50)
    base.update(kw)
    return ModelSpec(**base)


@pytest.fixture(scope="module")
def pair(demo_images):
    """Two different images of the same size (a 320x180 photo and its mirror image), so a batch
    pads neither."""
    photo = demo_images["000000000001"][::2, ::2]
    return [photo.copy(), photo[:, ::-1].copy()]


def _reference_model(arch: str, seed: int, score_thr: float, max_per_img: int):
    """mmdet's own model and test pipeline, set up by hand as the registry entry asks."""
    from mmdet.apis import init_detector
    from mmengine.config import Config

    cfg = Config.fromfile(str(mmdet_backend.mim_root() / arch))
    final = cfg.model.test_cfg.rcnn if "rcnn" in cfg.model.test_cfg else cfg.model.test_cfg
    final.score_thr, final.max_per_img = score_thr, max_per_img
    for step in cfg.test_dataloader.dataset.pipeline:
        step.update(SCALED[arch].get(step.type, {}))
    torch.manual_seed(seed)
    model = init_detector(cfg, checkpoint=None, device="cpu")  # PyTorch's default init; no download
    # random features give near-equal scores, RTMDet boxes of negative size and empty masks: rescale
    # the last layers so the checkpoint predicts spread-out scores, valid boxes and some mask pixels
    with torch.no_grad():
        if arch == RTMDET_TINY:
            for cls, reg in zip(model.bbox_head.rtm_cls, model.bbox_head.rtm_reg, strict=True):
                cls.weight.mul_(100)
                cls.bias.fill_(-4.0)  # some candidates above 0.3, not all 30000 (slow NMS)
                reg.weight.mul_(5)
                reg.bias.fill_(2.0)  # box sides ~2 strides from each point
        else:
            model.roi_head.bbox_head.fc_cls.weight.mul_(40)
            model.roi_head.mask_head.conv_logits.weight.mul_(10)
            model.roi_head.mask_head.conv_logits.bias.zero_()
    return model


def _save(model, path, classes=None):
    """As mmdet's runner saves: meta with the dataset's class names, plus pickled training state."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("miqd-test")
    hub.update_scalar("train/loss", 1.0)
    classes = tuple(classes or (name for _, name in COCO_CATEGORIES))
    torch.save({"meta": {"mmdet_version": "3.3.0", "dataset_meta": {"classes": classes}},
                "state_dict": model.state_dict(), "message_hub": hub.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def rtmdet(mmdet, tmp_path_factory):
    model = _reference_model(RTMDET_TINY, 11, 0.3, 50)
    return model, _save(model, tmp_path_factory.mktemp("mmdet") / "rtmdet_tiny.pth")


@pytest.fixture(scope="module")
def mask_rcnn(mmdet, tmp_path_factory):
    model = _reference_model(MASK_RCNN, 12, 0.05, 30)
    return model, _save(model, tmp_path_factory.mktemp("mmdet") / "mask_rcnn.pth")


def _check_schema(p: dict, image: np.ndarray, task: str) -> None:
    h, w = image.shape[:2]
    boxes = p["boxes_xyxy"]
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert p["scores"].dtype == np.float32 and p["labels"].dtype == np.int16
    assert len(p["scores"]) == len(p["labels"]) == len(boxes)
    assert np.all(np.diff(p["scores"]) <= 0)
    assert set(p["labels"].tolist()) <= set(COCO_IDS)
    assert boxes[:, [0, 2]].min() >= 0 and boxes[:, [0, 2]].max() <= w
    assert boxes[:, [1, 3]].min() >= 0 and boxes[:, [1, 3]].max() <= h
    if task == "ins":
        assert len(p["masks_rle"]) == len(boxes)
        for counts in p["masks_rle"]:
            assert mask_utils.decode({"size": [h, w], "counts": counts.encode()}).shape == (h, w)
    else:
        assert "masks_rle" not in p


# ---------------------------------------------------------------------------------------------
# the extra absent, and the config surgery (no mmdet needed)


@pytest.mark.parametrize("absent, what", [
    ("mmdet", "mmdet"),
    ("mmcv._ext", r"mmcv's compiled ops \(mmcv._ext; mmcv-lite is not enough\)"),
])
def test_missing_extra_is_a_clear_error(monkeypatch, absent, what):
    """The extra simulated as present but for one part (whether or not it is installed here)."""
    real = importlib.util.find_spec
    extra = ("mmengine", "mmcv", "mmdet", "mmcv._ext")

    def find_spec(name, *args):
        return (None if name == absent else object()) if name in extra else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(InputError, match=rf"^backend mmdet needs {what}: install the mmdet extra with "
                                         rf"`make mmdet`"):
        create_predictor(spec())


def test_pretrained_references_are_removed_and_remote_leftovers_named():
    cfg = {"backbone": {"type": "ResNet", "pretrained": "torchvision://resnet50",
                        "init_cfg": {"type": "Pretrained", "checkpoint": "https://x/r50.pth"}},
           "neck": {"init_cfg": [{"type": "Pretrained", "checkpoint": "/local/neck.pth", "prefix": "neck."},
                                 {"type": "Xavier", "layer": "Conv2d"}]},
           "bbox_head": {"init_cfg": {"type": "Normal", "std": 0.01}},
           "timm_backbone": {"type": "mmpretrain.TIMMBackbone", "pretrained": True}}
    mmdet_backend.drop_pretrained(cfg)
    assert cfg["backbone"]["pretrained"] is None and cfg["backbone"]["init_cfg"] is None
    assert cfg["neck"]["init_cfg"] == [{"type": "Xavier", "layer": "Conv2d"}]
    assert cfg["bbox_head"]["init_cfg"] == {"type": "Normal", "std": 0.01}  # a random init, kept
    assert cfg["timm_backbone"]["pretrained"] is False
    teacher = {"type": "KnowledgeDistillationSingleStageDetector", "teacher_ckpt": "https://x/paa.pth"}
    with pytest.raises(InputError, match=r"config key model.teacher_ckpt = 'https://x/paa.pth' is a remote "):
        mmdet_backend.drop_pretrained(teacher)


def test_output_limits_reach_the_final_stage_only():
    two_stage = {"rpn": {"nms_pre": 1000, "max_per_img": 1000}, "rcnn": {"score_thr": 0.05, "max_per_img": 100}}
    mmdet_backend.limit_outputs(two_stage, 0.2, 30)
    assert two_stage == {"rpn": {"nms_pre": 1000, "max_per_img": 1000},
                         "rcnn": {"score_thr": 0.2, "max_per_img": 30}}
    detr = {"max_per_img": 100}  # no score_thr; asking for more than the queries give is capped
    mmdet_backend.limit_outputs(detr, 0.05, 300)
    assert detr == {"max_per_img": 100}
    mask2former = {"max_per_image": 100, "iou_thr": 0.8}
    mmdet_backend.limit_outputs(mask2former, 0.05, 20)
    assert mask2former == {"max_per_image": 20, "iou_thr": 0.8}


def test_inference_pipeline_reads_arrays_and_scales_the_input_size():
    pipeline = [{"type": "LoadImageFromFile", "backend_args": None},
                {"type": "Resize", "scale": (1333, 800), "keep_ratio": True},
                {"type": "LoadAnnotations", "with_bbox": True},
                {"type": "Pad", "size": (640, 640)},
                {"type": "PackDetInputs"}]
    steps = mmdet_backend.inference_pipeline(pipeline, 320, "m")
    assert [s["type"] for s in steps] == ["mmdet.LoadImageFromNDArray", "Resize", "Pad", "PackDetInputs"]
    assert steps[1]["scale"] == (320, 192) and steps[2]["size"] == (320, 320)
    assert pipeline[1]["scale"] == (1333, 800)  # the config itself is left alone
    assert mmdet_backend.inference_pipeline(pipeline, None, "m")[1]["scale"] == (1333, 800)
    with pytest.raises(InputError, match=r"model 'm': preprocess.size is set but .* no Resize"):
        mmdet_backend.inference_pipeline([pipeline[0], pipeline[-1]], 320, "m")


def test_mask_predicting_models_are_told_by_their_heads():
    faster = {"type": "FasterRCNN", "roi_head": {"bbox_head": {"type": "Shared2FCBBoxHead"}}}
    mask = {"type": "MaskRCNN", "roi_head": {"type": "StandardRoIHead", "mask_head": {"type": "FCNMaskHead"}}}
    cascade = {"type": "CascadeRCNN", "roi_head": {"mask_head": [{"type": "FCNMaskHead"}] * 3}}
    rtmdet_ins = {"type": "RTMDet", "bbox_head": {"type": "RTMDetInsSepBNHead"}}
    mask2former = {"type": "Mask2Former", "test_cfg": {"panoptic_on": False, "instance_on": True}}
    detr = {"type": "DETR", "bbox_head": {"type": "DETRHead"}, "test_cfg": {"max_per_img": 100}}
    models = (faster, mask, cascade, rtmdet_ins, mask2former, detr)
    assert [mmdet_backend.predicts_masks(m) for m in models] == [False, True, True, True, True, False]
    assert not mmdet_backend.predicts_masks({"type": "RTMDet", "bbox_head": {"type": "RTMDetSepBNHead"}})


def test_class_names_from_checkpoint_meta_then_config_then_coco():
    coco = [n for _, n in COCO_CATEGORIES]
    assert mmdet_backend.class_names({"dataset_meta": {"CLASSES": ("cat", "dog")}}, None) == ["cat", "dog"]
    assert mmdet_backend.class_names({"CLASSES": ["car"]}, None) == ["car"]  # mmdet 2.x
    wrapped = {"type": "ClassBalancedDataset", "dataset": {"metainfo": {"classes": ("person",)}}}
    assert mmdet_backend.class_names({}, wrapped) == ["person"]
    assert mmdet_backend.class_names({}, {"type": "CocoDataset"}) == coco


# ---------------------------------------------------------------------------------------------
# real mmdet 3.3.0


@pytest.mark.parametrize("arch, task", [(RTMDET_TINY, "det"), (MASK_RCNN, "ins")])
def test_checkpoint_predictions_match_mmdets_own_inference(mmdet, request, pair, arch, task):
    """A batch through the registry entry = mmdet's inference_detector image by image, with class
    indices mapped to COCO ids; boxes and masks in each photo's own pixels."""
    from mmdet.apis import inference_detector

    model, path = request.getfixturevalue("rtmdet" if task == "det" else "mask_rcnn")
    final = model.cfg.model.test_cfg.get("rcnn", model.cfg.model.test_cfg)
    s = spec(id=f"test-{task}", task=task, arch=arch, weights={"file": str(path), "pickled": True},
             score_threshold=final.score_thr, max_detections=final.max_per_img)
    got = create_predictor(s).predict(pair)
    with torch.inference_mode():
        expected = [inference_detector(model, np.ascontiguousarray(img[..., ::-1])).pred_instances
                    for img in pair]
    for p, ref, img in zip(got, expected, pair, strict=True):
        _check_schema(p, img, task)
        assert len(p["scores"]) == len(ref.scores) <= final.max_per_img
        np.testing.assert_allclose(p["scores"], ref.scores.numpy(), rtol=1e-4, atol=1e-5)
        h, w = img.shape[:2]  # mmdet leaves single-stage boxes unclipped; the backend clips them
        np.testing.assert_allclose(p["boxes_xyxy"], ref.bboxes.numpy().clip(0, [w, h, w, h]), atol=0.05)
        assert p["labels"].tolist() == [COCO_CATEGORIES[i][0] for i in ref.labels.tolist()]
        if task == "ins":
            masks = np.stack([mask_utils.decode({"size": list(img.shape[:2]), "counts": c.encode()})
                              for c in p["masks_rle"]]).astype(bool)
            assert masks.any() and (masks == ref.masks.numpy()).mean() > 0.999


@pytest.mark.parametrize("task", ["det", "ins"])
def test_boxes_and_masks_are_in_original_pixels(mmdet, request, pair, task):
    """A 2x larger copy of a photo in the same batch (the same network input after resizing to 320)
    gives boxes exactly 2x larger, and masks of its own size."""
    _, path = request.getfixturevalue("rtmdet" if task == "det" else "mask_rcnn")
    s = spec(task=task, arch=RTMDET_TINY if task == "det" else MASK_RCNN,
             weights={"file": str(path), "pickled": True}, score_threshold=0.3, max_detections=30)
    small = pair[0]
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    p_small, p_large = create_predictor(s).predict([small, large])
    _check_schema(p_small, small, task)
    _check_schema(p_large, large, task)
    np.testing.assert_allclose(p_large["boxes_xyxy"], 2 * p_small["boxes_xyxy"], atol=0.05)
    np.testing.assert_array_equal(p_large["labels"], p_small["labels"])


def test_mmdets_coco_class_names_are_cocos(mmdet):
    """Checkpoints trained on COCO name their classes as mmdet's CocoDataset does: every name maps
    to its COCO id (mmdet 3.x lists them in COCO's order)."""
    from mmdet.datasets import CocoDataset

    assert list(CocoDataset.METAINFO["classes"]) == [name for _, name in COCO_CATEGORIES]


def test_reloading_a_checkpoint_gives_identical_predictions(rtmdet, pair):
    s = spec(weights={"file": str(rtmdet[1]), "pickled": True})
    a, b = create_predictor(s).predict(pair), create_predictor(s).predict(pair)
    for x, y in zip(a, b, strict=True):
        for key in ("boxes_xyxy", "scores", "labels"):
            np.testing.assert_array_equal(x[key], y[key])


def test_class_names_in_the_checkpoint_decide_the_coco_ids(rtmdet, pair, tmp_path):
    """A model trained with the classes in another order: its meta, not COCO's order, names them."""
    model, _ = rtmdet
    reverse = [n for _, n in COCO_CATEGORIES][::-1]
    path = _save(model, tmp_path / "reversed.pth", reverse)
    plain = create_predictor(spec(weights={"file": str(rtmdet[1]), "pickled": True})).predict(pair[:1])[0]
    flipped = create_predictor(spec(weights={"file": str(path), "pickled": True})).predict(pair[:1])[0]
    np.testing.assert_array_equal(flipped["boxes_xyxy"], plain["boxes_xyxy"])
    index = {cid: i for i, (cid, _) in enumerate(COCO_CATEGORIES)}
    assert flipped["labels"].tolist() == [COCO_CATEGORIES[79 - index[c]][0] for c in plain["labels"].tolist()]


def test_random_weights_are_seeded_by_model_id_with_mmdets_init(mmdet):
    def params(model_id):
        return create_predictor(spec(id=model_id)).model.state_dict()

    a, b, c = params("m"), params("m"), params("other")
    assert a.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.stem.0.conv.weight"], c["backbone.stem.0.conv.weight"])
    # mmdet's own initialisation ran (the 1% class prior of its head), not only PyTorch's default
    np.testing.assert_allclose(a["bbox_head.rtm_cls.0.bias"].numpy(), -np.log(99), rtol=1e-6)


def test_half_precision_is_applied_on_cuda_only(rtmdet, pair):
    s = spec(weights={"file": str(rtmdet[1]), "pickled": True})
    fp32 = create_predictor(s).predict(pair[:1])[0]
    bf16 = create_predictor(s, precision="bf16").predict(pair[:1])[0]  # on the CPU: no autocast
    np.testing.assert_array_equal(bf16["boxes_xyxy"], fp32["boxes_xyxy"])


def test_pickled_checkpoint_without_the_flag_names_the_fix(rtmdet):
    with pytest.raises(InputError, match=r"model 'm': .*rtmdet_tiny\.pth holds pickled Python objects \(.+\), which "
                                         r"could run code when loaded; .* opt in with weights.pickled: true"):
        create_predictor(spec(weights={"file": str(rtmdet[1])}))


def test_checkpoint_of_the_wrong_shape_names_model_file_and_mismatch(rtmdet):
    with pytest.raises(InputError, match=r"model 'm': checkpoint .*rtmdet_tiny\.pth does not fit architecture "
                                         r"'configs/rtmdet/rtmdet_s_8xb32-300e_coco.py' \(mmdet\): "
                                         r".*shape mismatch \(checkpoint vs model\)"):
        create_predictor(spec(arch=RTMDET_S, weights={"file": str(rtmdet[1]), "pickled": True}))


def test_unknown_config_and_det_config_for_masks_are_clear(mmdet):
    with pytest.raises(InputError, match=r"model 'm': mmdet config 'configs/rtmdet/nope.py' not found .*"
                                         r"relative to mmdet's .mim folder"):
        create_predictor(spec(arch="configs/rtmdet/nope.py"))
    with pytest.raises(InputError, match=r"model 'm': configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py predicts "
                                         r"no masks"):
        create_predictor(spec(task="ins"))


# DINO's 900 queries need at least as many encoder positions: 320 px is about its smallest input
@pytest.mark.parametrize("task, arch, size", [
    ("det", "configs/dino/dino-4scale_r50_8xb2-12e_coco.py", 320),
    ("ins", "configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco.py", 192),
])
def test_query_based_models_run_with_random_weights(mmdet, pair, task, arch, size):
    """The DETR family and Mask2Former (no NMS, deformable attention on the CPU, per-query masks)
    through the same backend: the registry's threshold and cap, frames and masks hold."""
    s = spec(id="query", task=task, arch=arch, preprocess={"size": size}, score_threshold=0.0,
             max_detections=20)
    p = create_predictor(s).predict(pair[:1])[0]
    _check_schema(p, pair[0], task)
    assert len(p["scores"]) == 20


def test_mask2former_upsamples_a_few_images_at_a_time_with_the_same_results(mmdet, pair, monkeypatch):
    """Its masks are upsampled (and fused) MASK_POSTPROCESS_IMAGES images at a time, not the whole
    batch at once, and every image's predictions equal mmdet's own unchunked predict."""
    import torch.nn.functional as F

    s = spec(id="m2f", task="ins", arch="configs/mask2former/mask2former_r50_8xb2-lsj-50e_coco.py",
             preprocess={"size": 128}, score_threshold=0.0, max_detections=20)
    predictor = create_predictor(s)
    images = [pair[0], pair[1], pair[0][::-1].copy(), pair[1][::-1].copy(), pair[0], pair[1]]
    calls = []
    interpolate = F.interpolate

    def spy(x, *args, **kw):
        if x.dim() == 4 and x.shape[1] == 100:  # (images, 100 queries, h, w): the head's mask logits
            calls.append((x.shape[0], tuple(kw.get("size") or args[0])))
        return interpolate(x, *args, **kw)

    def upsampled() -> list[int]:
        """Images per call of the final upsampling, to the padded input (the largest target)."""
        full = max(size for _, size in calls)
        return [n for n, size in calls if size == full]

    monkeypatch.setattr(F, "interpolate", spy)
    mmdet_backend.bound_mask_postprocess(predictor.model, 2)
    chunked = predictor.predict(images)
    assert upsampled() == [2, 2, 2]  # 6 images, 2 at a time
    del predictor.model.predict  # back to mmdet's own MaskFormer.predict: the whole batch at once
    calls.clear()
    whole = predictor.predict(images)
    assert upsampled() == [6]
    for a, b in zip(chunked, whole, strict=True):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="bf16 autocast runs on CUDA only; no CUDA device here")
def test_bf16_on_cuda_agrees_with_fp32(rtmdet, pair):
    s = spec(weights={"file": str(rtmdet[1]), "pickled": True})
    fp32 = create_predictor(s, device="cuda").predict(pair[:1])[0]
    bf16 = create_predictor(s, device="cuda", precision="bf16").predict(pair[:1])[0]
    k = min(5, len(fp32["scores"]), len(bf16["scores"]))
    assert k > 0 and np.median(np.abs(bf16["boxes_xyxy"][:k] - fp32["boxes_xyxy"][:k])) < 2.0


def test_the_registrys_bundled_configs_load_without_anything_remote(mmdet):
    """Every mmdet entry of the full label ensemble (config/models.yaml) whose config ships with
    mmdet: found, nothing left to download, the registry's limits applied, a test pipeline the size
    option can scale, and masks wherever the task is ins. (projects/ configs are not in the wheel.)"""
    entries = [s for s in load_registry(REPO / "config" / "models.yaml") if s.backend == "mmdet"]
    bundled = [s for s in entries if not s.arch.startswith("projects/")]
    assert len(bundled) >= 20
    for s in bundled:
        path, cfg, model_cfg = mmdet_backend.load_config(s)
        assert path == mmdet_backend.mim_root() / s.arch
        assert "Pretrained" not in repr(model_cfg) and "://" not in repr(model_cfg), s.id
        test_cfg = model_cfg["test_cfg"].get("rcnn") or model_cfg["test_cfg"]
        assert test_cfg.get("score_thr", s.score_threshold) == s.score_threshold, s.id
        assert test_cfg.get("max_per_img", test_cfg.get("max_per_image", 0)) <= s.max_detections, s.id
        steps = mmdet_backend.inference_pipeline(
            [step.to_dict() for step in cfg.test_dataloader.dataset.pipeline], 320, s.id)
        assert max(next(t for t in steps if t["type"].endswith("Resize"))["scale"]) == 320, s.id
        if s.task == "ins":
            assert mmdet_backend.predicts_masks(model_cfg), s.id
