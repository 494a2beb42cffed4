"""Quality models: RA-MIQA (paper §5) and the retrained baselines, in one registry.

`create_model(name, ...)` builds any of them the way `timm.create_model` builds a classifier.
Every model maps a batch of uint8 images to one score per image and normalises its inputs
itself (with its backbone's mean and std), so data loading stays uint8 and model-agnostic.

RA-MIQA (eqs. 9-13):
  region token  Z_r = LN(GELU(W_r · avgpool(R(x_288)) + b_r))   R frozen, pretrained
  sequence      [Z_r; Z_c; Z_p] + E_pos  ->  ViT-S/16 blocks  ->  final LN
  score         W_2 GELU(W_1 [h_r; h_c] + b_1) + b_2
The order inside the region projection is the paper's eq. 10 (Linear, GELU, then LayerNorm);
DESIGN.md lists LayerNorm before GELU, and the paper wins where they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from miqd.io import InputError
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, load_into, load_state_dict
from miqd.seeding import stream_key



@dataclass(frozen=True)
class ModelDef:
    """What a model name means: its default timm backbone and whether it has a region branch."""

    name: str
    arch: str
    region: bool
    build: Callable[..., nn.Module]
    paper_name: str


MODELS: dict[str, ModelDef] = {}


def register_model(name: str, arch: str, paper_name: str, region: bool = False):
    def wrap(fn):
        MODELS[name] = ModelDef(name, arch, region, fn, paper_name)
        return fn

    return wrap


def model_def(name: str) -> ModelDef:
    if name not in MODELS:
        raise InputError(f"unknown quality model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


# ---------------------------------------------------------------------------------------------
# weights


def training_spec(what: str, arch: str, weights) -> ModelSpec:
    """A registry-style spec so that miqd.models.weights loads (and reports on) the checkpoint."""
    return ModelSpec(id=what, task="cls", backend="timm", arch=arch, weights=weights, benchmark=0.0, group="train")


def weights_note(weights) -> str:
    """How a backbone was initialised, in words for logs and checkpoints."""
    if weights == "random":
        return "seeded random initialisation (no pretrained weights)"
    if isinstance(weights, dict):
        where = weights.get("file") or (weights.get("package", "") + ":" + weights.get("resource", "")) \
            or weights.get("hub") or weights.get("url")
        return f"pretrained weights from {where}"
    return str(weights)


def _adapt(model: nn.Module, sd: dict) -> dict:
    """A pretrained classifier's state dict for `model`: drop its classification head and resample
    ViT position embeddings to `model`'s grid (the checkpoint may be for another image size)."""
    head = model.pretrained_cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    own = model.state_dict()
    out = {}
    for key, tensor in sd.items():
        if any(key == h or key.startswith(h + ".") for h in heads) and (
            key not in own or tuple(own[key].shape) != tuple(tensor.shape)
        ):
            continue  # the 1000-way classifier: replaced by the regression head (or removed)
        out[key] = tensor
    if "pos_embed" in out and "pos_embed" in own and out["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        out["pos_embed"] = resample_abs_pos_embed(
            out["pos_embed"], new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix)
    return out


def _timm(arch: str, what: str, weights, seed: int, new_head: bool = False, key: str | None = None,
          **kwargs) -> nn.Module:
    """A timm model: seeded random init, then (unless `random`) a local checkpoint loaded through
    miqd.models.weights, so a missing or mismatched file is an error naming `what` and the file.

    `new_head`: the classifier is replaced (a regression head), so the checkpoint need not hold it.
    """
    import timm

    if not timm.is_model(arch):
        raise InputError(f"{what}: timm has no architecture {arch!r} (timm {timm.__version__})")
    torch.manual_seed(stream_key(seed, "train-init", what, arch) % (2**63))
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if weights != "random":
        spec = training_spec(what, arch, weights)
        path = checkpoint_path(spec, key)
        head = model.pretrained_cfg.get("classifier") or ()
        new_keys = tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head)) if new_head else ()
        load_into(model, spec, _adapt(model, load_state_dict(spec, path)), path, new_keys=new_keys)
    return model


class Normalize(nn.Module):
    """uint8 (or [0, 255] float) images to a backbone's normalised input."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0,
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def _normalize_for(model: nn.Module) -> Normalize:
    cfg = model.pretrained_cfg
    return Normalize(cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))


# ---------------------------------------------------------------------------------------------
# region encoder


class RegionEncoder(nn.Module):
    """A frozen pretrained feature extractor, average-pooled to one vector per image (eq. 9).

    CNNs pool their last feature map; ViTs pool their patch tokens (the class token is left out,
    it is not a spatial feature). Always in eval mode, never has gradients.
    """

    def __init__(self, arch: str, weights, seed: int = 0, size: int = 288):
        super().__init__()
        self.arch = arch
        self.weights = weights
        self.net = _timm(arch, "region encoder", weights, seed, num_classes=0, key="train.region_encoder.weights",
                         **_size_kwargs(arch, size))
        self.norm = _normalize_for(self.net)
        self.dim = int(self.net.num_features)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RegionEncoder:
        return super().train(False)  # frozen: BatchNorm statistics and dropout never change

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.forward_features(self.norm(x))
        if f.ndim == 4:  # (B, C, H, W)
            return f.mean(dim=(2, 3))
        prefix = int(getattr(self.net, "num_prefix_tokens", 0))
        return f[:, prefix:].mean(dim=1)  # (B, tokens, D)


# ---------------------------------------------------------------------------------------------
# models


class RAMIQA(nn.Module):
    """Region-aware MIQA: a ViT with a frozen-encoder region token in front of its class token."""

    def __init__(self, backbone: nn.Module, region: RegionEncoder):
        super().__init__()
        if not hasattr(backbone, "patch_embed") or getattr(backbone, "cls_token", None) is None:
            raise InputError("RA-MIQA needs a ViT backbone with a class token (e.g. vit_small_patch16_224)")
        if getattr(backbone, "no_embed_class", False) or getattr(backbone, "reg_token", None) is not None:
            raise InputError("RA-MIQA needs a ViT whose position embeddings cover its class token, "
                             "without register tokens")
        self.vit = backbone
        self.norm = _normalize_for(backbone)
        self.region = region
        d = backbone.embed_dim
        # eq. 10: Z_r = LN(GELU(W_r F + b_r))
        self.region_proj = nn.Sequential(nn.Linear(region.dim, d), nn.GELU(), nn.LayerNorm(d))
        # E_pos for [region; class; patches]: the pretrained class + patch rows and a new one
        pos = backbone.pos_embed.detach()
        region_pos = torch.zeros(1, 1, d)
        nn.init.trunc_normal_(region_pos, std=0.02)
        backbone.pos_embed = nn.Parameter(torch.cat([region_pos, pos], dim=1))
        # eq. 13
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))
        for m in [*self.region_proj, *self.head]:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, region_x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        z_r = self.region_proj(self.region(region_x)).unsqueeze(1)  # (B, 1, D)
        z_p = vit.patch_embed(self.norm(x))  # (B, Np, D)
        z_c = vit.cls_token.expand(z_p.shape[0], -1, -1)
        z = torch.cat([z_r.to(z_p.dtype), z_c, z_p], dim=1) + vit.pos_embed
        z = vit.norm(vit.blocks(vit.norm_pre(vit.pos_drop(z))))
        h = torch.cat([z[:, 0], z[:, 1]], dim=-1)  # eq. 12: [h_r; h_c]
        return self.head(h).squeeze(-1)


class Regressor(nn.Module):
    """A timm backbone with a one-output regression head (the paper's retrained baselines)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.net = backbone
        self.norm = _normalize_for(backbone)

    def forward(self, x: torch.Tensor, region_x: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.norm(x)).squeeze(-1)


def _size_kwargs(arch: str, size: int) -> dict:
    """Vision transformers are built for their input size (position embeddings); CNNs take any."""
    return {"img_size": size} if arch.startswith(("vit_", "deit", "beit", "eva")) else {}


def _baseline(name: str, arch: str, weights, seed: int, img_size: int, **_) -> nn.Module:
    return Regressor(_timm(arch, f"quality model {name}", weights, seed, new_head=True, num_classes=1,
                           key=f"train.models.{name}.weights", **_size_kwargs(arch, img_size)))


@register_model("ra_miqa", "vit_small_patch16_224", "RA-MIQA", region=True)
def _ra_miqa(name: str, arch: str, weights, seed: int, img_size: int, region: RegionEncoder, **_) -> nn.Module:
    backbone = _timm(arch, f"quality model {name}", weights, seed, num_classes=0, img_size=img_size,
                     key=f"train.models.{name}.weights")
    return RAMIQA(backbone, region)


for _name, _arch, _paper in [
    ("vit_small", "vit_small_patch16_224", "ViT-small"),
    ("resnet18", "resnet18", "ResNet-18"),
    ("resnet50", "resnet50", "ResNet-50"),
    ("efficientnet_b1", "efficientnet_b1", "EfficientNet-b1"),
    ("efficientnet_b5", "efficientnet_b5", "EfficientNet-b5"),
]:
    register_model(_name, _arch, _paper)(_baseline)


def create_model(name: str, weights="random", arch: str | None = None, seed: int = 0, img_size: int = 224,
                 region_arch: str | None = None, region_weights=None, region_size: int = 288) -> nn.Module:
    """Build quality model `name`; `weights` initialises its backbone (`random` or a weights spec
    as in the model registry: {file: ...}, {package: ..., resource: ...}, {hub: ...}); the region
    encoder (RA-MIQA only) is always pretrained: `region_weights` must not be `random` in earnest
    use, but tests may pass it."""
    d = model_def(name)
    region = None
    if d.region:
        if region_arch is None or region_weights is None:
            raise InputError(f"quality model {name!r} needs a region encoder (arch and weights)")
        region = RegionEncoder(region_arch, region_weights, seed, region_size)
    model = d.build(name=name, arch=arch or d.arch, weights=weights, seed=seed, img_size=img_size, region=region)
    model.quality_name = name
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts (the frozen region encoder is never trainable)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def checkpoint_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist; train a model first (`miqd train`, or "
                         f"`snakemake` for the workflow's runs) or pass --checkpoint")
    return path
