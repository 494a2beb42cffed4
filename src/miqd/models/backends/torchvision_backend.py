"""COCO detectors and instance segmenters from torchvision (Faster/Mask R-CNN, RetinaNet, FCOS, ...).

torchvision's detection models resize internally and return boxes and masks in the original
image's pixels; their labels are COCO category ids already (the 91-id space).
"""

from __future__ import annotations

import numpy as np

from miqd.errors import InputError
from miqd.models.backends.base import Predictor, detection
from miqd.models.coco import COCO_IDS
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, load_into, load_state_dict, seed_for

_COCO_ID_ARRAY = np.array(COCO_IDS)


def _create(spec: ModelSpec):
    import torch
    from torchvision.models import detection as tvdet
    from torchvision.models import get_model, list_models

    if spec.arch not in list_models(module=tvdet):
        raise InputError(
            f"model {spec.id!r}: torchvision has no detection architecture {spec.arch!r}; "
            f"available: {', '.join(list_models(module=tvdet))}"
        )
    if spec.task == "ins" and "mask" not in spec.arch:
        raise InputError(f"model {spec.id!r}: {spec.arch} predicts no masks; task ins needs a Mask R-CNN")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 91}
    if "rcnn" in spec.arch:
        kwargs.update(box_score_thresh=spec.score_threshold, box_detections_per_img=spec.max_detections)
    else:  # RetinaNet, FCOS, SSD
        kwargs.update(score_thresh=spec.score_threshold, detections_per_img=spec.max_detections)
    if "size" in spec.preprocess and "ssd" not in spec.arch:
        kwargs.update(min_size=spec.preprocess["size"], max_size=int(spec.preprocess["size"] * 1333 / 800))
    clash = set(spec.options or {}) & set(kwargs)
    if clash:
        raise InputError(f"model {spec.id!r}: options {sorted(clash)} are set from the registry's own keys "
                         f"(score_threshold, max_detections, preprocess.size); use those instead")
    kwargs.update(spec.options or {})
    if spec.random_weights:
        torch.manual_seed(seed_for(spec))
    model = get_model(spec.arch, **kwargs)
    unknown = set(spec.options or {}) - _init_parameters(type(model))
    if unknown:  # torchvision's builders swallow unknown keyword arguments: say so instead
        raise InputError(f"model {spec.id!r}: torchvision's {spec.arch} takes no options {sorted(unknown)}; "
                         f"it takes {', '.join(sorted(_init_parameters(type(model)) - {'self'}))}")
    path = checkpoint_path(spec)
    if path is not None:
        load_into(model, spec, load_state_dict(path, spec.weights, spec.arch, f"model {spec.id!r}"), path)
    return model


def _init_parameters(cls: type) -> set[str]:
    import inspect

    return {name for klass in cls.__mro__ if "__init__" in vars(klass)
            for name, p in inspect.signature(klass.__init__).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build(spec: ModelSpec, device: str, precision: str = "fp32", channels_last: bool = False):
    return TorchvisionPredictor(spec, device, precision)


class TorchvisionPredictor(Predictor):
    def __init__(self, spec: ModelSpec, device: str, precision: str):
        super().__init__(spec, device, precision)
        self.model = _create(spec).eval().to(device)

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1).float() / 255.0
                   for img in images]
        with torch.inference_mode(), self.autocast():
            outputs = self.model(tensors)
        results = []
        for out in outputs:
            labels = out["labels"].cpu().numpy()
            scores = out["scores"].float().cpu().numpy()
            # a COCO category, above the threshold (random weights can predict the 11 unused ids)
            keep = np.isin(labels, _COCO_ID_ARRAY) & (scores >= self.spec.score_threshold)
            keep &= np.cumsum(keep) <= self.spec.max_detections
            masks = None
            if self.spec.task == "ins":
                masks = (out["masks"][:, 0] > 0.5).cpu().numpy()
            results.append(detection(self.spec.task, out["boxes"].float().cpu().numpy(), scores,
                                     labels, masks, keep))
        return results
