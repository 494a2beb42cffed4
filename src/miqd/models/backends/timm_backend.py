"""ImageNet-1k classifiers from timm.

Preprocessing is timm's evaluation transform for the architecture (resize of the short side to
size / crop_pct, centre crop, normalise), done with torch on the inference device from the
decoded uint8 image; the registry's `preprocess` overrides any part of it.
"""

from __future__ import annotations

import math

import numpy as np

from miqd.errors import InputError
from miqd.models.backends.base import Predictor
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, load_into, load_state_dict, seed_for


def _create(spec: ModelSpec):
    import timm
    import torch

    if not timm.is_model(spec.arch):
        raise InputError(
            f"model {spec.id!r}: timm has no architecture {spec.arch!r} (timm {timm.__version__}); "
            f"see timm.list_models()"
        )
    if spec.random_weights:
        torch.manual_seed(seed_for(spec))
    model = timm.create_model(spec.arch, pretrained=False)
    if model.num_classes != 1000:
        raise InputError(
            f"model {spec.id!r}: {spec.arch} has {model.num_classes} classes, not ImageNet-1k's 1000; "
            f"its predictions cannot be compared with ImageNet labels"
        )
    path = checkpoint_path(spec)
    if path is not None:
        load_into(model, spec, load_state_dict(path, spec.weights, spec.arch, f"model {spec.id!r}"), path)
    return model


def build(spec: ModelSpec, device: str, precision: str = "fp32", channels_last: bool = False):
    return TimmPredictor(spec, device, precision, channels_last)


class TimmPredictor(Predictor):
    def __init__(self, spec: ModelSpec, device: str, precision: str, channels_last: bool):
        import timm
        import torch

        super().__init__(spec, device, precision)
        model = _create(spec).eval().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.channels_last = channels_last
        cfg = timm.data.resolve_data_config({}, model=model)
        p = spec.preprocess
        self.size = int(p.get("size", cfg["input_size"][-1]))
        self.resize = int(p.get("resize", math.floor(self.size / cfg.get("crop_pct", 0.875))))
        self.interpolation = p.get("interpolation", cfg.get("interpolation", "bicubic"))
        if self.interpolation not in ("bilinear", "bicubic"):
            self.interpolation = "bicubic"
        self.mean = torch.tensor(p.get("mean", cfg["mean"]), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(p.get("std", cfg["std"]), device=device).view(1, 3, 1, 1)

    def batch(self, images: list[np.ndarray]):
        """Resize the short side, centre-crop, normalise: one (B, 3, size, size) float tensor."""
        import torch
        import torch.nn.functional as F

        crops = []
        for img in images:
            h, w = img.shape[:2]
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(self.resize * long / short)
            nh, nw = (self.resize, new_long) if h <= w else (new_long, self.resize)
            t = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(nh, nw), mode=self.interpolation, antialias=True, align_corners=False)
            top, left = int(round((nh - self.size) / 2.0)), int(round((nw - self.size) / 2.0))
            crops.append(t[..., top : top + self.size, left : left + self.size])
        x = (torch.cat(crops).clamp_(0, 255) / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def predict(self, images: list[np.ndarray]) -> list[dict]:
        import torch

        with torch.inference_mode(), self.autocast():
            probs = self.model(self.batch(images)).float().softmax(-1)
        top = probs.topk(5, dim=-1)
        ids, values = top.indices.cpu().numpy(), top.values.cpu().numpy()
        return [{"top5_ids": ids[i].astype(np.int16), "top5_probs": values[i].astype(np.float32)}
                for i in range(len(images))]
