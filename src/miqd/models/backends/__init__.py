"""Model backends, in the manner of timm's create_model: one factory, modules imported on use.

mmdet is an optional extra: its module is imported only when a registry entry uses it.
"""

from __future__ import annotations

import importlib

from miqd.errors import InputError
from miqd.models.backends.base import Predictor
from miqd.models.registry import ModelSpec
from miqd.plugins import Registry

BACKENDS: Registry[str] = Registry("backend")  # name -> the module that builds its models
BACKENDS.add("timm", "miqd.models.backends.timm_backend")
BACKENDS.add("torchvision", "miqd.models.backends.torchvision_backend")
BACKENDS.add("ultralytics", "miqd.models.backends.ultralytics_backend")
BACKENDS.add("mmdet", "miqd.models.backends.mmdet_backend")
TASKS = {"timm": ("cls",), "torchvision": ("det", "ins"), "ultralytics": ("det", "ins"),
         "mmdet": ("det", "ins")}


def create_predictor(spec: ModelSpec, device: str = "cpu", precision: str = "fp32",
                     channels_last: bool = False) -> Predictor:
    """Build `spec` on `device` with its weights loaded; every problem is an InputError naming it."""
    module_name = BACKENDS.get(spec.backend, f"model {spec.id!r}")
    if spec.task not in TASKS[spec.backend]:
        raise InputError(
            f"model {spec.id!r}: backend {spec.backend} serves tasks {', '.join(TASKS[spec.backend])}, "
            f"not {spec.task}"
        )
    module = importlib.import_module(module_name)
    return module.build(spec, device, precision, channels_last)
