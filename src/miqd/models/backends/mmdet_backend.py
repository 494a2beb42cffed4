"""COCO detectors and instance segmenters from MMDetection 3.x (optional extra: `make mmdet`).

The model is built from its mmdet config (backbone `init_cfg` cleared, so nothing is downloaded)
and the checkpoint is loaded by miqd's own loader, which names the model and the file on error.
Images go in as BGR arrays (mmdet's convention for NumPy input); boxes and masks come back in
original pixels; class names map to COCO ids.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from miqd.io import InputError
from miqd.models.backends.base import Predictor, coco_label_lookup, detection
from miqd.models.coco import COCO_CATEGORIES
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, load_into, load_state_dict, seed_for


def require_mmdet() -> None:
    missing = [m for m in ("mmengine", "mmcv", "mmdet") if importlib.util.find_spec(m) is None]
    if missing or importlib.util.find_spec("mmcv._ext") is None:
        what = ", ".join(missing) if missing else "mmcv's compiled ops (mmcv._ext; mmcv-lite is not enough)"
        raise InputError(
            f"backend mmdet needs {what}: install the mmdet extra with `make mmdet` (builds mmcv 2.1.0 "
            f"with its ops from source, ~11 min on 2 cores; see README)"
        )


def config_path(spec: ModelSpec) -> Path:
    path = Path(spec.arch)
    if path.is_file():
        return path
    root = Path(next(iter(importlib.util.find_spec("mmdet").submodule_search_locations))) / ".mim"
    for candidate in (root / spec.arch, root / "configs" / spec.arch):
        if candidate.is_file():
            return candidate
    raise InputError(f"model {spec.id!r}: mmdet config {spec.arch!r} not found (looked in {root})")


def _clear_init_cfg(node) -> None:
    """Drop every `init_cfg` (pretrained-backbone downloads) from a config tree."""
    if isinstance(node, dict):
        if "init_cfg" in node:
            node["init_cfg"] = None
        for value in node.values():
            _clear_init_cfg(value)
    elif isinstance(node, list):
        for value in node:
            _clear_init_cfg(value)


def _create(spec: ModelSpec, device: str):
    require_mmdet()
    import torch
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(config_path(spec)))
    _clear_init_cfg(cfg.model)
    if spec.random_weights:
        torch.manual_seed(seed_for(spec))
    model = init_detector(cfg, checkpoint=None, device="cpu")
    path = checkpoint_path(spec)
    if path is None:
        model.init_weights()
    else:
        load_into(model, spec, load_state_dict(spec, path), path)
    classes = (getattr(model, "dataset_meta", None) or {}).get("classes") or [n for _, n in COCO_CATEGORIES]
    if spec.task == "ins" and not getattr(model, "with_mask", "mask_head" in str(cfg.model)):
        raise InputError(f"model {spec.id!r}: {spec.arch} predicts no masks; task ins needs a mask head")
    return model.to(device).eval(), dict(enumerate(classes))


def build(spec: ModelSpec, device: str, precision: str = "fp32", channels_last: bool = False):
    return MMDetPredictor(spec, device, precision)


class MMDetPredictor(Predictor):
    def __init__(self, spec: ModelSpec, device: str, precision: str):
        super().__init__(spec, device, precision)
        self.model, names = _create(spec, device)
        self.lookup = coco_label_lookup(spec, names)

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        import torch
        from mmdet.apis import inference_detector

        with torch.inference_mode(), self.autocast():
            samples = inference_detector(self.model, [np.ascontiguousarray(img[..., ::-1]) for img in images])
        out = []
        for sample in samples:
            inst = sample.pred_instances
            scores = inst.scores.float().cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            keep = np.zeros(len(scores), bool)
            keep[order[: self.spec.max_detections]] = True
            keep &= scores >= self.spec.score_threshold
            labels = np.array([self.lookup[int(c)] for c in inst.labels.cpu().numpy()], np.int16)
            masks = inst.masks.cpu().numpy().astype(bool) if self.spec.task == "ins" else None
            out.append(detection(self.spec.task, inst.bboxes.float().cpu().numpy(), scores, labels, masks, keep))
        return out
