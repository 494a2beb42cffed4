"""Quality models: RA-MIQA (paper §5) and the retrained baselines, in one registry.

`create_quality_model(name, ...)` builds any of them the way `timm.create_model` builds a classifier.
Every model maps a batch of uint8 images to one score per image and normalises its inputs itself,
so data loading stays uint8 and model-agnostic.

The definitions are the ones the published MIQA checkpoints were made with (github.com/SYSU-Video/
MIQA, `models/RA_MIQA.py`, `models/MIQA_base.py`), module for module, so those checkpoints load
(`miqd.train.checkpoints`). Where the paper's text and that code differ, the code is followed:

RA-MIQA
  region token   Z_r = GELU(LN(W_r · mean(R(x_288)) + b_r))  R frozen, ImageNet-normalised input
                 (the paper's eq. 10 puts GELU before LN; the code LN before GELU)
  sequence       [Z_r; Z_c; Z_p] + E_pos -> ViT-S/16 blocks -> final LN   (main input 0.5/0.5-normalised)
                 E_pos is new: its row 0 (the region token's) starts as the pretrained class-token
                 row, row 1 (the class token's) at N(0, 0.02), rows 2.. the pretrained patch rows
  score          W_2 Dropout_0.2(GELU(W_1 [h_c; h_r] + b_1)) + b_2   (class token first)
  R              the paper's: SERE ViT-S/16 finetuned on ImageNet-S, run as mmsegmentation's
                 VisionTransformer (final norm on every token, position embeddings resized
                 bicubically to the 18x18 grid of a 288 input, patch tokens averaged); any timm CNN
                 too (its last feature map averaged), which the embedded demo uses.
Baselines
  ResNet-18/50, EfficientNet-B1/B5: torchvision's, the classifier replaced by Linear(features, 1),
  ImageNet-normalised input; ViT-S/16: timm's with a one-output head, 0.5/0.5-normalised input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from miqd.errors import InputError
from miqd.plugins import Registry
from miqd.models.registry import ModelSpec
from miqd.models.weights import checkpoint_path, fit_report, load_into, load_state_dict
from miqd.seeding import stream_key
from miqd.train import checkpoints

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TORCHVISION_BASELINES = ("resnet18", "resnet50", "efficientnet_b1", "efficientnet_b5")


@dataclass(frozen=True)
class ModelDef:
    """What a model name means: its default backbone and whether it has a region branch."""

    name: str
    arch: str
    region: bool
    build: Callable[..., nn.Module]
    paper_name: str


MODELS: Registry[ModelDef] = Registry("quality model")


def register_model(name: str, arch: str, paper_name: str, region: bool = False):
    def wrap(fn):
        MODELS.add(name, ModelDef(name, arch, region, fn, paper_name))
        return fn

    return wrap


def model_def(name: str) -> ModelDef:
    return MODELS.get(name)


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


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head = cfg.get("classifier") or ("fc", "classifier", "head")
    return (head,) if isinstance(head, str) else tuple(head)


def _adapt(model: nn.Module, sd: dict, new_head: bool) -> dict:
    """A pretrained classifier's state dict for `model`: drop its classification head (always when
    a new head replaces it, else when it does not fit) and resample ViT position embeddings to
    `model`'s grid (the checkpoint may be for another image size)."""
    own = model.state_dict()
    out = {}
    for key, tensor in sd.items():
        if any(key == h or key.startswith(h + ".") for h in _classifier_keys(model)) and (
            new_head or key not in own or tuple(own[key].shape) != tuple(tensor.shape)
        ):
            continue  # the 1000-way classifier: replaced by the regression head (or removed)
        out[key] = tensor
    if "pos_embed" in out and "pos_embed" in own and out["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        out["pos_embed"] = resample_abs_pos_embed(
            out["pos_embed"], new_size=model.patch_embed.grid_size, num_prefix_tokens=prefix)
    return out


def _load_pretrained(model: nn.Module, what: str, arch: str, weights, key: str, new_head: bool) -> None:
    """Seeded random init, then (unless `random`) a local checkpoint loaded through
    miqd.models.weights, so a missing or mismatched file is an error naming the config key."""
    if weights == "random":
        return
    spec = training_spec(what, arch, weights)
    path = checkpoint_path(spec, key)
    new_keys = tuple(f"{h}." for h in _classifier_keys(model)) if new_head else ()
    state_dict = _adapt(model, load_state_dict(path, weights, arch, key, key), new_head)
    load_into(model, spec, state_dict, path, new_keys=new_keys)


def _seed(seed: int, what: str, arch: str) -> None:
    torch.manual_seed(stream_key(seed, "train-init", what, arch) % (2**63))


def _timm(arch: str, what: str, weights, seed: int, new_head: bool = False, key: str | None = None,
          **kwargs) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise InputError(f"{key or what}: timm has no architecture {arch!r} (timm {timm.__version__})")
    _seed(seed, what, arch)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    _load_pretrained(model, what, arch, weights, key, new_head)
    return model


def _torchvision(arch: str, what: str, weights, seed: int, key: str) -> nn.Module:
    """A torchvision classifier with MIQA's one-output head (its `get_torch_model`)."""
    from torchvision import models

    if arch not in models.list_models(module=models):
        raise InputError(f"{key}: torchvision has no classification architecture {arch!r}")
    _seed(seed, what, arch)
    model = models.get_model(arch, weights=None)
    _load_pretrained(model, what, arch, weights, key, new_head=True)
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, 1)
    else:  # EfficientNet: Sequential(Dropout, Linear) -> Linear, as MIQA replaces it
        model.classifier = nn.Linear(model.classifier[-1].in_features, 1)
    return model


class Normalize(nn.Module):
    """uint8 images to a backbone's input: ToTensor then Normalize, as torchvision computes them."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


# ---------------------------------------------------------------------------------------------
# region encoder


def mmseg_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], native: tuple[int, int]) -> torch.Tensor:
    """mmsegmentation's `resize_pos_embed`: the patch rows bicubically (align_corners False, no
    antialiasing) from the `native` grid to `grid`; the class-token row as is."""
    if tuple(grid) == tuple(native):
        return pos_embed
    cls, patches = pos_embed[:, :1], pos_embed[:, -native[0] * native[1]:]
    patches = patches.reshape(1, native[0], native[1], -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.flatten(2).transpose(1, 2)], dim=1)


class RegionEncoder(nn.Module):
    """A frozen pretrained feature extractor, averaged to one vector per image (paper eq. 9).

    Always in eval mode, never has gradients; its input is ImageNet-normalised, as MIQA's.
    """

    def __init__(self, arch: str, weights, seed: int = 0, size: int = 288):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.arch, self.weights, self.size = arch, weights, size
        self.net = _timm(arch, "region encoder", weights, seed, num_classes=0, key="train.region_encoder.weights")
        self.vit = isinstance(self.net, VisionTransformer)
        if self.vit:
            if getattr(self.net, "cls_token", None) is None or self.net.num_prefix_tokens != 1:
                raise InputError(f"train.region_encoder.arch: {arch} has no single class token; the region "
                                 f"encoder runs ViTs as mmsegmentation's VisionTransformer, which has one")
            self.net.patch_embed.strict_img_size = False
        self.norm = Normalize(*IMAGENET_NORM)
        self.dim = int(self.net.num_features)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RegionEncoder:
        return super().train(False)  # frozen: BatchNorm statistics and dropout never change

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if not self.vit:
            return self.net.forward_features(x).mean(dim=(2, 3))
        net = self.net
        grid = (x.shape[2] // net.patch_embed.patch_size[0], x.shape[3] // net.patch_embed.patch_size[1])
        tokens = net.patch_embed(x)
        tokens = torch.cat([net.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = net.pos_drop(tokens + mmseg_pos_embed(net.pos_embed, grid, net.patch_embed.grid_size))
        tokens = net.norm(net.blocks(net.norm_pre(tokens)))
        return tokens[:, 1:].mean(dim=1)


# ---------------------------------------------------------------------------------------------
# models


class RAMIQA(nn.Module):
    """Region-aware MIQA: a ViT with a frozen-encoder region token in front of its class token."""

    def __init__(self, base_model: nn.Module, mask_encoder: RegionEncoder):
        super().__init__()
        if not hasattr(base_model, "patch_embed") or getattr(base_model, "cls_token", None) is None:
            raise InputError("RA-MIQA needs a ViT backbone with a class token (e.g. vit_small_patch16_224)")
        if getattr(base_model, "no_embed_class", False) or getattr(base_model, "reg_token", None) is not None:
            raise InputError("RA-MIQA needs a ViT whose position embeddings cover its class token, "
                             "without register tokens")
        for head in ("head", "fc_norm", "head_drop"):  # MIQA deletes these; its own head replaces them
            if hasattr(base_model, head):
                delattr(base_model, head)
        self.base_model = base_model
        self.mask_encoder = mask_encoder
        self.norm = Normalize(*HALF_NORM)
        d = base_model.embed_dim
        self.mask_projector = nn.Sequential(nn.Linear(mask_encoder.dim, d), nn.LayerNorm(d), nn.GELU())
        pos = base_model.pos_embed.detach()
        # the backbone's own position embeddings are unused from here on but stay in the state dict
        # (MIQA's checkpoints carry them); a buffer, so that they are neither trained nor left
        # without gradients under DistributedDataParallel
        del base_model.pos_embed
        base_model.register_buffer("pos_embed", pos.clone())
        new = torch.zeros(1, pos.shape[1] + 1, d)
        new[0, 0] = pos[0, 0]
        nn.init.normal_(new[0, 1:2], std=0.02)
        new[0, 2:] = pos[0, 1:]
        self.pos_embed = nn.Parameter(new)
        self.quality_regressor = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(0.2), nn.Linear(d, 1))

    def forward(self, x: torch.Tensor, region_x: torch.Tensor) -> torch.Tensor:
        vit = self.base_model
        z_p = vit.patch_embed(self.norm(x))
        z_r = self.mask_projector(self.mask_encoder(region_x)).unsqueeze(1).to(z_p.dtype)
        z_c = vit.cls_token.expand(z_p.shape[0], -1, -1)
        z = vit.pos_drop(torch.cat([z_r, z_c, z_p], dim=1) + self.pos_embed)
        z = vit.norm(vit.blocks(z))
        return self.quality_regressor(torch.cat([z[:, 1], z[:, 0]], dim=-1)).view(-1)


class Regressor(nn.Module):
    """A backbone with a one-output regression head (the paper's retrained baselines)."""

    def __init__(self, backbone: nn.Module, norm: tuple):
        super().__init__()
        self.net = backbone
        self.norm = Normalize(*norm)

    def forward(self, x: torch.Tensor, region_x: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.norm(x)).view(-1)


def _size_kwargs(arch: str, size: int) -> dict:
    """Vision transformers are built for their input size (position embeddings); CNNs take any."""
    return {"img_size": size} if arch.startswith(("vit_", "deit", "beit", "eva")) else {}


def _baseline(name: str, arch: str, weights, seed: int, img_size: int, **_) -> nn.Module:
    key = f"train.models.{name}.weights"
    from torchvision import models

    if arch in models.list_models(module=models):
        return Regressor(_torchvision(arch, f"quality model {name}", weights, seed, key), IMAGENET_NORM)
    net = _timm(arch, f"quality model {name}", weights, seed, new_head=True, num_classes=1, key=key,
                **_size_kwargs(arch, img_size))
    vit = arch.startswith(("vit_", "deit", "beit", "eva"))
    return Regressor(net, HALF_NORM if vit else IMAGENET_NORM)


@register_model("ra_miqa", "vit_small_patch16_224", "RA-MIQA", region=True)
def _ra_miqa(name: str, arch: str, weights, seed: int, img_size: int, region: RegionEncoder, **_) -> nn.Module:
    backbone = _timm(arch, f"quality model {name}", weights, seed, num_classes=0, img_size=img_size,
                     key=f"train.models.{name}.weights")
    _seed(seed, f"quality model {name}", "ra_miqa-head")
    return RAMIQA(backbone, region)


for _name, _arch, _paper in [
    ("vit_small", "vit_small_patch16_224", "ViT-small"),
    ("resnet18", "resnet18", "ResNet-18"),
    ("resnet50", "resnet50", "ResNet-50"),
    ("efficientnet_b1", "efficientnet_b1", "EfficientNet-b1"),
    ("efficientnet_b5", "efficientnet_b5", "EfficientNet-b5"),
]:
    register_model(_name, _arch, _paper)(_baseline)


def create_quality_model(name: str, weights="random", arch: str | None = None, seed: int = 0, img_size: int = 224,
                 region_arch: str | None = None, region_weights=None, region_size: int = 288) -> nn.Module:
    """Build quality model `name`.

    `weights` initialises it: `random`, a backbone checkpoint ({file: ...}, {package: ..., resource:
    ...}, {hub: ...}, as in the model registry; ImageNet weights for the paper's runs), or a whole
    quality model (a `miqd train` model.pt or a published MIQA checkpoint), which then loads in
    full. The region encoder (RA-MIQA only) is always pretrained: `region_weights` must not be
    `random` in earnest use, but tests may pass it.
    """
    d = model_def(name)
    full = checkpoints.whole_model_file(weights)
    region = None
    if d.region:
        if region_arch is None or region_weights is None:
            raise InputError(f"quality model {name!r} needs a region encoder (arch and weights)")
        region = RegionEncoder(region_arch, "random" if full else region_weights, seed, region_size)
    model = d.build(name=name, arch=arch or d.arch, weights="random" if full else weights, seed=seed,
                    img_size=img_size, region=region)
    model.quality_name = name
    if full:
        checkpoints.load_whole(model, full, f"train.models.{name}.weights",
                               pickled=bool(weights.get("pickled", False)))
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


def load_quality_model(path: str | Path, device: str = "cpu", trust_pickle: bool = False):
    """(model in eval mode, what is known of it) from a model.pt of `miqd train` or a MIQA checkpoint."""
    path = checkpoint_file(path)
    try:
        raw = checkpoints.read(path, f"checkpoint {path.name}", trust_pickle)
    except (InputError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         f"is it a model.pt written by `miqd train`?") from None
    name, sd, info = checkpoints.recognise(raw, path)
    s = info["settings"]
    model = create_quality_model(name, weights="random", arch=s["arch"], seed=s["seed"], img_size=s["crop"],
                                 region_arch=s["region_arch"], region_weights="random" if s["region_arch"] else None,
                                 region_size=s["region_size"])
    problem = fit_report(model.state_dict(), sd)
    if problem:
        raise InputError(f"checkpoint {path} ({info['source']}, {name}) does not fit miqd's {name}: {problem}")
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval(), info
