"""Quality-model checkpoints: miqd's `model.pt` and the published MIQA ones, recognised by their keys.

MIQA (github.com/SYSU-Video/MIQA) publishes RA-MIQA and its baselines trained on MIQD-2.5M as
`miqa_<model>_<task>_<label>_metric.pth.tar`: {'epoch', 'arch', 'state_dict', 'best_srcc',
'optimizer', 'scheduler'}, the state dict perhaps with DataParallel's `module.` prefixes. Which
model a file holds is read off its keys; its task and label off its name where it has MIQA's. The
RA-MIQA mask encoder is mmsegmentation's VisionTransformer and is renamed to timm's; everything
else keeps MIQA's module names, which miqd's models share.

These files come from a file-sharing site: they are read with `weights_only` (tensors, numbers,
strings and numpy scalars; no pickled code runs). A file that needs more is refused, saying so,
unless the caller opts in (`--trust-pickle`, or `pickled: true` in the config).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from miqd.errors import InputError
from miqd.models.weights import fit_report, mmseg_vit_to_timm, torch_load

FORMAT = "miqd-quality-model/1"
MIQA_PREPROCESS = {"resize": 288, "crop": 224, "region_size": 288}  # its img_inference.py
_MIQA_NAME = re.compile(r"miqa_(?P<model>.+?)_(?P<task>cls|det|ins)_(?P<label>composite|consistency|accuracy)_metric")
_MIQA_MODELS = {"ra_miqa": "ra_miqa", "vit_small_patch16_224": "vit_small", "resnet18": "resnet18",
                "resnet50": "resnet50", "efficientnet_b1": "efficientnet_b1", "efficientnet_b5": "efficientnet_b5"}


def read(path: Path, what: str, pickled: bool = False, opt_in: str = "--trust-pickle") -> dict:
    raw = torch_load(path, what, pickled, opt_in)
    if not isinstance(raw, dict):
        raise InputError(f"{what}: {path} holds a {type(raw).__name__}, not a checkpoint")
    return raw


def _state(raw: dict) -> dict:
    sd = raw["state_dict"] if isinstance(raw.get("state_dict"), dict) else raw
    return {k.removeprefix("module."): v for k, v in sd.items() if hasattr(v, "shape")}


def miqa_model(sd: dict) -> str | None:
    """Which of MIQA's quality models a state dict is (None: not one of them)."""
    if "quality_regressor.0.weight" in sd and any(k.startswith("mask_encoder.") for k in sd):
        return "ra_miqa"
    if "fc.weight" in sd and "layer1.0.conv1.weight" in sd and sd["fc.weight"].shape[0] == 1:
        return "resnet50" if "layer1.0.conv3.weight" in sd else "resnet18"
    if "classifier.weight" in sd and "features.0.0.weight" in sd and sd["classifier.weight"].shape[0] == 1:
        return {1280: "efficientnet_b1", 2048: "efficientnet_b5"}.get(sd["classifier.weight"].shape[1])
    if "head.weight" in sd and "blocks.0.attn.qkv.weight" in sd and sd["head.weight"].shape[0] == 1:
        return "vit_small"
    return None


def miqa_to_miqd(model: str, sd: dict) -> dict:
    """A MIQA state dict in the names of miqd's model of the same definition."""
    if model != "ra_miqa":
        return {f"net.{k}": v for k, v in sd.items()}
    encoder = mmseg_vit_to_timm({k[len("mask_encoder."):]: v for k, v in sd.items() if k.startswith("mask_encoder.")})
    out = {k: v for k, v in sd.items() if not k.startswith("mask_encoder.")}
    out.update({f"mask_encoder.net.{k}": v for k, v in encoder.items()})
    return out


def _miqa_from_name(path: Path) -> dict:
    m = _MIQA_NAME.search(path.name)
    return {"task": m["task"], "label": m["label"]} if m else {"task": "?", "label": "?"}


def recognise(raw: dict, path: Path) -> tuple[str, dict, dict]:
    """(model name, state dict in miqd's names, what is known of it) of a checkpoint either tool wrote."""
    if raw.get("format") == FORMAT:
        s = json.loads(raw["settings"])
        return s["model"], raw["state_dict"], {"settings": s, "model": s["model"], "task": raw["task"],
                                                "label": raw["label"], "backbone_init": raw["backbone_init"],
                                                "region_init": raw.get("region_init", ""), "step": raw["step"],
                                                "source": "miqd"}
    sd = _state(raw)
    model = miqa_model(sd)
    if model is None:
        raise InputError(f"checkpoint {path} is neither a miqd model.pt nor a published MIQA checkpoint (RA-MIQA, "
                         f"ResNet-18/50, EfficientNet-B1/B5, ViT-S); is it a model.pt written by `miqd train`?")
    arch = {"resnet18": "resnet18", "resnet50": "resnet50", "efficientnet_b1": "efficientnet_b1",
            "efficientnet_b5": "efficientnet_b5"}.get(model, "vit_small_patch16_224")
    settings = {"model": model, "arch": arch, "seed": 0, **MIQA_PREPROCESS,
                "region_arch": "vit_small_patch16_224" if model == "ra_miqa" else None}
    info = {"settings": settings, "model": model, **_miqa_from_name(path), "source": "miqa", "step": raw.get("epoch"),
            "backbone_init": f"published MIQA checkpoint {path.name} (epoch {raw.get('epoch', '?')})",
            "region_init": "the checkpoint's own mask encoder" if model == "ra_miqa" else ""}
    return model, miqa_to_miqd(model, sd), info


def load_whole(model, path: Path, key: str, pickled: bool = False) -> None:
    """All of `model`'s weights from a whole quality-model checkpoint (miqd's or MIQA's)."""
    name, sd, _ = recognise(read(path, key, pickled, f"{key}.pickled: true"), path)
    expected = model.state_dict()
    problem = fit_report(expected, sd)
    if name != model.quality_name or problem:
        raise InputError(f"{key}: {path} holds a {name} checkpoint that does not fit quality model "
                         f"{model.quality_name}" + (f" ({problem})" if problem else "") +
                         "; for RA-MIQA the region encoder must be the one it was trained with "
                         "(train.region_encoder.arch)")
    model.load_state_dict(sd, strict=True)


def whole_model_file(weights) -> Path | None:
    """The file of `weights` if it holds a whole quality model (not just a backbone)."""
    if not isinstance(weights, dict) or "file" not in weights:
        return None
    path = Path(weights["file"])
    if not path.is_file() or path.suffix == ".safetensors":
        return None
    try:
        raw = read(path, "weights", bool(weights.get("pickled", False)))
    except InputError:
        return None  # the backbone loader reports what is wrong with it
    return path if raw.get("format") == FORMAT or miqa_model(_state(raw)) else None
