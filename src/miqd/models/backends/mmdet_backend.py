"""COCO detectors and instance segmenters from MMDetection 3.x (optional extra: `make mmdet`).

The model is built from one of mmdet's bundled configs with every pretrained-backbone reference
removed (nothing is downloaded), then gets either seeded random parameters or a checkpoint read by
miqd's own loader (the class names the model was trained on come from the checkpoint's `meta`).
A batch runs as one `test_step`, as mmdet's DetInferencer does: the test pipeline per image (images
go in as BGR arrays, mmdet's convention for NumPy input), then one padded forward pass. Boxes and
masks come back in original pixels; class indices map to COCO ids.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from miqd.errors import InputError
from miqd.models.backends.base import Predictor, coco_label_lookup, detection
from miqd.models.coco import COCO_CATEGORIES
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, load_checkpoint, load_into, seed_for

if TYPE_CHECKING:
    from mmengine.config import Config

MMDET_VERSION = "3.3.0"


def require_mmdet() -> None:
    missing = [m for m in ("mmengine", "mmcv", "mmdet") if importlib.util.find_spec(m) is None]
    if missing or importlib.util.find_spec("mmcv._ext") is None:
        what = ", ".join(missing) if missing else "mmcv's compiled ops (mmcv._ext; mmcv-lite is not enough)"
        raise InputError(
            f"backend mmdet needs {what}: install the mmdet extra with `make mmdet` (builds mmcv 2.1.0 "
            f"with its ops from source once, 15-20 min on 2 cores; see docs/cluster.md)"
        )


def mim_root() -> Path:
    """mmdet's bundled `.mim` folder (holds `configs/`), against which `arch` paths are resolved."""
    return Path(next(iter(importlib.util.find_spec("mmdet").submodule_search_locations))) / ".mim"


# mmdetection's own sources, for the configs under projects/ that the wheel does not ship; their
# `_base_` paths climb to the repository's configs/, so both folders are kept, side by side
MMDET_SOURCES_URL = f"https://github.com/open-mmlab/mmdetection/archive/refs/tags/v{MMDET_VERSION}.tar.gz"
SOURCES_FOLDERS = ("configs", "projects")


def sources_root() -> Path:
    """Where `miqd models fetch` unpacks mmdetection's configs/ and projects/ (the weights cache)."""
    from miqd.models.weights import weights_cache

    return weights_cache() / f"mmdetection-{MMDET_VERSION}"


def _fetch_hint(spec: ModelSpec) -> str:
    return (f"run `miqd models fetch --registry <this registry>` where the internet is reachable (it unpacks "
            f"mmdetection v{MMDET_VERSION}'s configs/ and projects/ from {MMDET_SOURCES_URL} into "
            f"{sources_root()})")


def config_path(spec: ModelSpec) -> Path:
    """`arch` as a file: an absolute path, a `projects/` path in mmdetection's fetched sources, or
    a path relative to mmdet's `.mim` folder."""
    if Path(spec.arch).is_absolute():
        path = Path(spec.arch)
    elif spec.arch.startswith("projects/"):
        path = sources_root() / spec.arch
        if not path.is_file():
            raise InputError(
                f"model {spec.id!r}: mmdet config {spec.arch!r} is in mmdetection's projects/ folder, which "
                f"the mmdet wheel does not ship, and {path} does not exist; {_fetch_hint(spec)}"
            )
    else:
        path = mim_root() / spec.arch
    if not path.is_file():
        raise InputError(
            f"model {spec.id!r}: mmdet config {spec.arch!r} not found ({path} does not exist); `arch` is "
            f"a config path relative to mmdet's .mim folder (e.g. configs/rtmdet/"
            f"rtmdet_tiny_8xb32-300e_coco.py), a projects/ path, or an absolute path"
        )
    return path


# what a custom import needs when it does not resolve; projects.* modules come with the sources
CUSTOM_IMPORT_FIXES = {
    # the last MMClassification 1.x asserts mmcv < 2.1.0 at import, so it cannot load beside
    # mmdet 3.3.0's mmcv 2.1.0
    "mmcls": "it needs MMClassification 1.x (`pip install --no-deps mmcls==1.0.0rc6`), which refuses "
             "mmcv 2.1.0: run this model in an environment with mmcv 2.0.1, or leave it out of the registry",
    "mmpretrain": "install MMPretrain: `pip install --no-deps mmpretrain==1.2.0`",
}


def custom_imports(path: Path) -> list[str]:
    """The modules a config's `custom_imports` names, read without executing the config."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "custom_imports" for t in node.targets):
            for kw in getattr(node.value, "keywords", []):
                if kw.arg == "imports" and isinstance(kw.value, (ast.List, ast.Tuple)):
                    names += [e.value for e in kw.value.elts if isinstance(e, ast.Constant)]
    return names


def use_sources() -> None:
    """Put mmdetection's fetched sources on the import path, so `projects.*` custom imports load."""
    import sys

    root = str(sources_root())
    if sources_root().is_dir() and root not in sys.path:
        sys.path.append(root)


def config_problems(spec: ModelSpec) -> list[str]:
    """What keeps `spec`'s config from loading, found without mmdet: the file, and every custom
    import it names that does not resolve (with the fix)."""
    if not Path(spec.arch).is_absolute() and not spec.arch.startswith("projects/"):
        if importlib.util.find_spec("mmdet") is None:
            return []  # a bundled config: the backend check names the missing extra
    try:
        path = config_path(spec)
    except InputError as err:
        return [str(err)]
    use_sources()
    problems = []
    for name in custom_imports(path):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            top = name.split(".")[0]
            fix = CUSTOM_IMPORT_FIXES.get(top, _fetch_hint(spec) if top == "projects" else
                                          f"install the package that provides {top}")
            problems.append(f"model {spec.id!r}: config {spec.arch} imports {name!r} (custom_imports), "
                            f"which does not resolve; {fix}")
    return problems


# ---------------------------------------------------------------------------------------------
# config surgery: pure functions over the config's plain-dict tree


def drop_pretrained(node: object, where: str = "model") -> None:
    """Remove every pretrained-weights reference (backbone `init_cfg` of type Pretrained, legacy
    `pretrained=` paths or flags) so building the model downloads nothing; an error names any other
    remote reference left (e.g. a distillation teacher's `teacher_ckpt`)."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key == "init_cfg":
                node[key] = _without_pretrained_init(value)
            elif key == "pretrained" and isinstance(value, (str, bool)):
                node[key] = False if isinstance(value, bool) else None
            else:
                drop_pretrained(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            drop_pretrained(value, f"{where}[{i}]")
    elif isinstance(node, str) and "://" in node:
        raise InputError(
            f"config key {where} = {node!r} is a remote file the model would fetch when built; miqd never "
            f"downloads in a job: use a config without it (or an absolute path to a local file)"
        )


def _is_pretrained_init(init) -> bool:
    return isinstance(init, dict) and (init.get("type") in ("Pretrained", "PretrainedInit")
                                       or "checkpoint" in init)


def _without_pretrained_init(init):
    if _is_pretrained_init(init):
        return None
    if isinstance(init, (list, tuple)):
        kept = [i for i in init if not _is_pretrained_init(i)]
        return kept or None
    return init


def limit_outputs(test_cfg: dict | None, score_threshold: float, max_detections: int) -> None:
    """Make the model's own score threshold the registry's and cap its detections per image, in
    the final stage's test_cfg (`rcnn` for two-stage models; never the RPN's proposal count)."""
    if not isinstance(test_cfg, dict):
        return
    final = test_cfg["rcnn"] if isinstance(test_cfg.get("rcnn"), dict) else test_cfg
    if "score_thr" in final:
        final["score_thr"] = score_threshold
    for key in ("max_per_img", "max_per_image"):
        if isinstance(final.get(key), int):
            final[key] = min(final[key], max_detections)


def inference_pipeline(pipeline: list[dict], size: int | None, model_id: str) -> list[dict]:
    """The config's test pipeline for in-memory images: loaded from an array, no annotations, and
    with `size` (preprocess.size) the configured input scale shrunk or grown so its long side is it."""
    steps = []
    for step in copy.deepcopy(list(pipeline)):
        kind = str(step["type"]).split(".")[-1]
        if kind == "LoadAnnotations":
            continue
        if kind == "LoadImageFromFile":
            step = {"type": "mmdet.LoadImageFromNDArray"}
        steps.append(step)
    if not steps or steps[0]["type"] != "mmdet.LoadImageFromNDArray":
        raise InputError(
            f"model {model_id!r}: its config's test pipeline does not start with LoadImageFromFile"
        )
    if size is not None:
        resized = False
        for step in steps:
            kind = str(step["type"]).split(".")[-1]
            if kind == "Resize" and step.get("scale") is not None:
                step["scale"] = _scaled(step["scale"], size)
                resized = True
            elif kind == "Pad" and step.get("size") is not None:
                step["size"] = _scaled(step["size"], size)
        if not resized:
            raise InputError(
                f"model {model_id!r}: preprocess.size is set but its config's test pipeline has no "
                f"Resize with a scale to change; remove preprocess.size"
            )
    return steps


def _scaled(scale, size: int) -> tuple[int, int]:
    w, h = (scale, scale) if isinstance(scale, int) else scale
    factor = size / max(w, h)
    return round(w * factor), round(h * factor)


def predicts_masks(model_cfg: dict) -> bool:
    """Whether a model config segments instances: a mask head (Mask/Cascade Mask R-CNN, PointRend,
    HTC, SOLO, CondInst, ...), an instance head (RTMDet-Ins) or instance output from queries
    (MaskFormer, Mask2Former). (Configs' test metrics are no guide: some mask configs evaluate bbox.)"""
    if isinstance(model_cfg, dict):
        kind = str(model_cfg.get("type", "")).split(".")[-1]
        if model_cfg.get("mask_head") or re.search(r"Ins(SepBN)?Head$", kind) or model_cfg.get("instance_on"):
            return True
        return any(predicts_masks(v) for v in model_cfg.values())
    if isinstance(model_cfg, (list, tuple)):
        return any(predicts_masks(v) for v in model_cfg)
    return False


def class_names(meta: dict, dataset_cfg: dict | None) -> list[str]:
    """The classes the model predicts: from the checkpoint's meta (mmdet 3.x `dataset_meta`, 2.x
    `CLASSES`), else the config's test dataset, else COCO's 80."""
    if isinstance(meta.get("dataset_meta"), dict):
        meta = {k.lower(): v for k, v in meta["dataset_meta"].items()}
    found = meta.get("classes") or meta.get("CLASSES")
    if found:
        return [str(c) for c in found]
    while isinstance(dataset_cfg, dict) and "metainfo" not in dataset_cfg and "dataset" in dataset_cfg:
        dataset_cfg = dataset_cfg["dataset"]
    configured = ((dataset_cfg or {}).get("metainfo") or {}).get("classes")
    return [str(c) for c in configured] if configured else [name for _, name in COCO_CATEGORIES]


# ---------------------------------------------------------------------------------------------
# building


def load_config(spec: ModelSpec) -> tuple[Path, Config, dict]:
    """`arch`'s config file, the loaded config, and its model section as a plain dict, made safe to
    build (nothing remote) and limited to the registry's score threshold and detection count."""
    from mmengine.config import Config

    path = config_path(spec)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as err:  # noqa: BLE001 - a config that does not load is the user's file
        raise InputError(
            f"model {spec.id!r}: mmdet config {path} does not load ({type(err).__name__}: {err})"
        ) from None
    model_cfg = cfg.model.to_dict()
    try:
        drop_pretrained(model_cfg)
    except InputError as err:
        raise InputError(f"model {spec.id!r}: mmdet config {path}: {err}") from None
    limit_outputs(model_cfg.get("test_cfg"), spec.score_threshold, spec.max_detections)
    return path, cfg, model_cfg


def _create(spec: ModelSpec, device: str):
    require_mmdet()
    import torch
    from mmcv.ops import RoIPool
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmdet.utils import get_test_pipeline_cfg, register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.model.utils import revert_sync_batchnorm

    register_all_modules(init_default_scope=True)
    use_sources()
    path, cfg, model_cfg = load_config(spec)
    plain = cfg.to_dict()
    if spec.task == "ins" and not predicts_masks(model_cfg):
        raise InputError(
            f"model {spec.id!r}: {spec.arch} predicts no masks (no mask head in its model); task ins "
            f"needs an instance-segmentation config"
        )
    steps = [s.to_dict() if hasattr(s, "to_dict") else dict(s) for s in get_test_pipeline_cfg(cfg)]
    pipeline = inference_pipeline(steps, spec.preprocess.get("size"), spec.id)
    if spec.random_weights:
        torch.manual_seed(seed_for(spec))
    try:
        model = revert_sync_batchnorm(MODELS.build(ConfigDict(model_cfg)))  # mmdet reads attributes
    except Exception as err:  # noqa: BLE001 - unknown types, wrong arguments: the config's problem
        raise InputError(
            f"model {spec.id!r}: mmdet cannot build the model of config {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300]})"
        ) from None
    meta = {}
    ckpt = checkpoint_path(spec)
    if ckpt is None:
        model.init_weights()
    else:
        state_dict, meta = load_checkpoint(ckpt, spec.weights, spec.arch, f"model {spec.id!r}")
        load_into(model, spec, state_dict, ckpt)
    if device == "cpu" and any(isinstance(m, RoIPool) for m in model.modules()):
        raise InputError(f"model {spec.id!r}: {spec.arch} uses RoIPool, which mmcv runs only on CUDA")
    names = class_names(meta, plain.get("test_dataloader", {}).get("dataset"))
    return model.to(device).eval(), Compose(pipeline), dict(enumerate(names))


# MaskFormer-style heads upsample every query's mask logits to the padded input in one fp32 tensor
# (batch x 100 queries x 1024^2: ~53 GB at 128 images); this many images at a time bounds it
MASK_POSTPROCESS_IMAGES = 4


def bound_mask_postprocess(model, images: int = MASK_POSTPROCESS_IMAGES) -> None:
    """Make a MaskFormer/Mask2Former `predict` upsample and fuse `images` images at a time: the same
    forward pass once, the same per-image results, at most `images` upsampled mask stacks alive."""
    import torch.nn.functional as F

    def predict(batch_inputs, batch_data_samples, rescale: bool = True):
        feats = model.extract_feat(batch_inputs)
        all_cls, all_masks = model.panoptic_head(feats, batch_data_samples)
        cls, masks = all_cls[-1], all_masks[-1]
        h, w = batch_data_samples[0].metainfo["batch_input_shape"][:2]
        results = []
        for i in range(0, len(batch_data_samples), images):
            upsampled = F.interpolate(masks[i:i + images], size=(h, w), mode="bilinear", align_corners=False)
            results += model.panoptic_fusion_head.predict(cls[i:i + images], upsampled,
                                                          batch_data_samples[i:i + images], rescale=rescale)
            del upsampled
        return model.add_pred_to_datasample(batch_data_samples, results)

    model.predict = predict


def build(spec: ModelSpec, device: str, precision: str = "fp32", channels_last: bool = False):
    return MMDetPredictor(spec, device, precision)


class MMDetPredictor(Predictor):
    """bf16/fp16 (CUDA only) covers the backbone and neck, where most of the work is; heads, box
    decoding and NMS stay in fp32, since mmcv's CUDA kernels (nms, RoIAlign) take no bfloat16."""

    def __init__(self, spec: ModelSpec, device: str, precision: str):
        super().__init__(spec, device, precision)
        self.model, self.pipeline, names = _create(spec, device)
        self.lookup = coco_label_lookup(spec, names)
        extract_feat = self.model.extract_feat

        def autocast_features(inputs):
            with self.autocast():
                return _as_float32(extract_feat(inputs))

        self.model.extract_feat = autocast_features
        if hasattr(self.model, "panoptic_fusion_head"):
            bound_mask_postprocess(self.model)

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        import torch

        if not images:
            return []
        samples = [self.pipeline({"img": np.ascontiguousarray(img[..., ::-1]), "img_id": i})
                   for i, img in enumerate(images)]
        batch = {"inputs": [s["inputs"] for s in samples], "data_samples": [s["data_samples"] for s in samples]}
        with torch.inference_mode():
            results = self.model.test_step(batch)
        if results and "pred_instances" not in results[0]:
            raise InputError(
                f"model {self.spec.id!r}: {self.spec.arch} returns no instance predictions (a panoptic or "
                f"semantic segmentation config?); det and ins need a detector or instance segmenter"
            )
        return [self._detection(r.pred_instances, img.shape[:2])
                for r, img in zip(results, images, strict=True)]

    def _detection(self, inst, shape: tuple[int, int]) -> dict:
        """Sorted by score, thresholded, capped; boxes clipped to the image (single-stage heads
        decode boxes against the padded input, so they can reach past the image's edge)."""
        import torch

        scores = inst.scores.float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= self.spec.score_threshold][: self.spec.max_detections]
        labels = inst.labels.cpu().numpy()[order]
        unknown = sorted(set(labels.tolist()) - set(self.lookup))
        if unknown:
            raise InputError(
                f"model {self.spec.id!r}: predicts class indices {unknown[:5]} beyond its {len(self.lookup)} "
                f"class names; the checkpoint's meta or the config's dataset names the wrong classes"
            )
        masks = None
        if self.spec.task == "ins":
            if "masks" not in inst:
                raise InputError(
                    f"model {self.spec.id!r}: {self.spec.arch} returned no masks; task ins needs masks"
                )
            masks = inst.masks[torch.as_tensor(order, dtype=torch.long, device=inst.masks.device)]
            masks = masks.cpu().numpy().astype(bool)
        boxes = inst.bboxes.float().cpu().numpy()[order]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, shape[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, shape[0])
        return detection(self.spec.task, boxes, scores[order],
                         np.array([self.lookup[int(c)] for c in labels], np.int16), masks)


def _as_float32(features):
    if isinstance(features, (list, tuple)):
        return type(features)(_as_float32(f) for f in features)
    return features.float() if hasattr(features, "float") and features.is_floating_point() else features
