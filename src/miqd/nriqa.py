"""No-reference IQA metrics by name (pyiqa underneath), with weights from local files.

A registry in timm's style: `available_metrics()` lists the names, `create_metric(name, ...)`
builds one. Each entry says whether the metric has learned weights and where pyiqa publishes
them. A metric's `weights` (config `select.<dataset>.metrics[i].weights`) is

- absent, for metrics without learned parameters (piqe);
- `{file: path}` (optionally `pickled: true`): a local checkpoint, loaded strictly;
- `hub`: pyiqa's published checkpoint from pyiqa's cache (`$TORCH_HOME/hub/pyiqa`, by default
  ~/.cache/torch/hub/pyiqa), downloaded there first if missing (the default; needs the internet
  unless the file is already in the cache).

HyperIQA and MANIQA build a timm backbone with `pretrained=True` inside pyiqa. Those backbone
tensors are part of the metric's checkpoint, which is loaded strictly (every tensor must be in it),
so the backbone is built here without weights and nothing is downloaded for it; a checkpoint that
lacks them is an error naming the missing keys.

Importing this module does not import torch or pyiqa (the Snakefile validates configs with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miqd.errors import InputError
from miqd.plugins import Registry

HUB = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights"


@dataclass(frozen=True)
class MetricInfo:
    name: str
    pyiqa_name: str
    lower_better: bool
    checkpoint: str | None = None  # file name pyiqa publishes; None: no learned weights
    description: str = ""

    @property
    def needs_weights(self) -> bool:
        return self.checkpoint is not None


METRICS: Registry[MetricInfo] = Registry("NR-IQA metric")


def register(info: MetricInfo) -> MetricInfo:
    return METRICS.add(info.name, info)


register(MetricInfo("piqe", "piqe", lower_better=True,
                    description="PIQE (Venkatanath et al. 2015): block-wise distortion estimate, no weights"))
register(MetricInfo("hyperiqa", "hyperiqa", lower_better=False,
                    checkpoint="HyperIQA-resnet50-koniq10k-c96c41b1.pth",
                    description="HyperIQA (Su et al. 2020), ResNet-50, trained on KonIQ-10k"))
register(MetricInfo("maniqa", "maniqa", lower_better=False, checkpoint="ckpt_koniq10k.pt",
                    description="MANIQA (Yang et al. 2022), ViT-B/8, trained on KonIQ-10k"))


def available_metrics() -> list[str]:
    return sorted(METRICS)


def metric_info(name: str) -> MetricInfo:
    return METRICS.get(name)


def check_metric_config(entry: dict, key: str) -> None:
    """Check a config entry {name, weights, options} without touching files; fill weights: hub."""
    info = METRICS.get(entry["name"], f"{key}.name")
    weights = entry.get("weights")
    if not info.needs_weights and weights is not None:
        raise InputError(f"{key}.weights: metric {info.name!r} has no learned weights; remove the key")
    if info.needs_weights and weights is None:
        entry["weights"] = "hub"


@contextlib.contextmanager
def _backbones_without_download() -> Iterator[None]:
    """timm.create_model(..., pretrained=True) inside pyiqa builds the architecture only."""
    import timm

    original = timm.create_model

    def create_model(*args, **kwargs):
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original


class Metric:
    """One NR-IQA metric on a device: `scores(batch)` for a (B, 3, H, W) float batch in [0, 1]."""

    def __init__(self, info: MetricInfo, model, device: str):
        self.info = info
        self.model = model
        self.device = device

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def lower_better(self) -> bool:
        return self.info.lower_better

    def scores(self, batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(batch.to(self.device))
        return out.detach().float().cpu().numpy().reshape(batch.shape[0], -1)[:, 0].astype(np.float64)


def create_metric(name: str, weights: str | dict | None = None, device: str = "cpu",
                  options: dict | None = None, key: str | None = None) -> Metric:
    """Build metric `name` with its weights loaded, on `device`; errors name `key` (config key)."""
    info = metric_info(name)
    key = key or f"metric {name}"
    options = dict(options or {})
    if info.needs_weights and weights is None:
        weights = "hub"
    path = None
    if isinstance(weights, dict):
        path = Path(weights["file"])
        if not path.is_file():
            raise InputError(
                f"{key}: weights file {path} of {name} does not exist; download {info.checkpoint} "
                f"from {HUB} and put it there (or set weights: hub where the internet is reachable)"
            )
    try:
        import pyiqa
    except ImportError as err:
        raise InputError(
            f"{key}: pyiqa is not importable ({err}); install it without its dependencies: "
            f"pip install --no-deps pyiqa==0.1.16 (make setup does)"
        ) from None

    with _backbones_without_download():
        if weights == "hub":
            try:
                metric = pyiqa.create_metric(info.pyiqa_name, device="cpu", **options)
            except Exception as err:  # noqa: BLE001 - any download failure is the same user error
                raise InputError(
                    f"{key}: weights: hub could not fetch {info.checkpoint} ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200] if str(err) else ''}); on a machine without "
                    f"internet download it from {HUB} and set weights: {{file: <path>}}"
                ) from None
        elif info.needs_weights:
            metric = pyiqa.create_metric(info.pyiqa_name, device="cpu", pretrained=False, **options)
            _load_checkpoint(metric.net, info, weights, path, key)
        else:
            metric = pyiqa.create_metric(info.pyiqa_name, device="cpu", **options)
    metric = metric.to(device).eval()
    metric.device = device
    return Metric(info, metric, device)


def _load_checkpoint(net, info: MetricInfo, weights: dict, path: Path, key: str) -> None:
    from miqd.models.weights import fit_report, load_state_dict

    sd = load_state_dict(path, weights, info.name, key, f"{key}.weights")
    for wrapper in ("params", "params_ema"):  # pyiqa / BasicSR checkpoints
        if wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
            break
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    report = fit_report(net.state_dict(), sd)
    if report:
        raise InputError(
            f"{key}: checkpoint {path} does not fit {info.name} ({report}); it must be pyiqa's "
            f"{info.checkpoint} or a checkpoint of the same network"
        )
    net.load_state_dict(sd, strict=True)
