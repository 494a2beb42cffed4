"""YOLO detectors and segmenters from ultralytics.

A `.pt` checkpoint is ultralytics' own format (the whole model, loaded by `YOLO(path)`); with
`weights: random` the architecture is built from `arch` (a model yaml such as yolov8n-seg.yaml).
Images go in as BGR arrays (ultralytics' convention for NumPy input); boxes come back in original
pixels and, with retina_masks, masks at the original size. Class indices map to COCO ids by name,
or through the registry's label_map.
"""

from __future__ import annotations

import os

import numpy as np

from miqd.errors import InputError
from miqd.models.backends.base import Predictor, coco_label_lookup, detection
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, seed_for

_TASKS = {"det": "detect", "ins": "segment"}


def _quiet() -> None:
    for key, value in (("YOLO_OFFLINE", "1"), ("YOLO_VERBOSE", "False"), ("YOLO_AUTOINSTALL", "False")):
        os.environ.setdefault(key, value)


def _create(spec: ModelSpec):
    _quiet()
    import torch
    from ultralytics import YOLO

    path = checkpoint_path(spec)
    try:
        if path is None:
            torch.manual_seed(seed_for(spec))
            model = YOLO(spec.arch)
        else:
            model = YOLO(str(path))
    except FileNotFoundError as err:
        raise InputError(f"model {spec.id!r}: ultralytics cannot build {spec.arch!r} ({err})") from None
    except Exception as err:  # noqa: BLE001 - ultralytics raises many types for a bad file
        raise InputError(
            f"model {spec.id!r}: ultralytics cannot load {path or spec.arch} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    if model.task != _TASKS[spec.task]:
        raise InputError(
            f"model {spec.id!r}: {path or spec.arch} is an ultralytics {model.task} model, "
            f"task {spec.task} needs {_TASKS[spec.task]}"
        )
    return model


def build(spec: ModelSpec, device: str, precision: str = "fp32", channels_last: bool = False):
    return UltralyticsPredictor(spec, device, precision)


class UltralyticsPredictor(Predictor):
    def __init__(self, spec: ModelSpec, device: str, precision: str):
        super().__init__(spec, device, precision)
        self.model = _create(spec)
        self.lookup = coco_label_lookup(spec, self.model.names)
        self.size = int(spec.preprocess.get("size", 640))
        if precision == "bf16" and device.startswith("cuda"):
            import logging

            logging.getLogger("miqd.infer").warning(
                "model %s: ultralytics predicts in fp16 or fp32 only; infer.precision bf16 runs it in fp32", spec.id)

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        results = self.model.predict(
            [np.ascontiguousarray(img[..., ::-1]) for img in images],
            imgsz=self.size, conf=self.spec.score_threshold, max_det=self.spec.max_detections,
            retina_masks=True, verbose=False, device=self.device, half=self.precision == "fp16",
        )
        out = []
        for r in results:
            classes = r.boxes.cls.cpu().numpy().astype(int)
            labels = np.array([self.lookup[c] for c in classes], np.int16)
            masks = None
            if self.spec.task == "ins":
                h, w = r.orig_shape
                masks = (r.masks.data.cpu().numpy() > 0.5) if r.masks is not None else np.zeros((0, h, w), bool)
            out.append(detection(self.spec.task, r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                                 labels, masks))
        return out
