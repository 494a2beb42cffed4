"""Dense ViT descriptors and CLS-attention saliency (Amir et al.), from a timm ViT on a local file.

The descriptor pass runs the ViT with its patch embedding at a smaller `stride` than the patch
size (overlapping patches: DINO ViT-S/8 at stride 4 gives a token every 4 pixels), with the
position embedding resampled to that grid (timm's dynamic image size), up to block `layer`, and
takes that block's `facet` (key by default) for every patch token. The saliency pass runs at
`saliency_scale` of the load size at the patch stride and averages the last block's attention of
the CLS token over `saliency_heads`, min-max normalised per image (the reference implementation's
low-resolution saliency), then nearest-resized to the descriptor grid.

Only the CLS row of the attention is computed, and the descriptor pass stops at `layer`, so the
stride-4 token count (about 4,000 tokens at load size 224) costs no (tokens x tokens) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from miqd.errors import InputError


@dataclass
class ImageFeatures:
    descriptors: np.ndarray  # (gh * gw, dim) float32
    saliency: np.ndarray  # (gh * gw,) float32 in [0, 1]
    grid: tuple[int, int]  # (gh, gw) tokens
    load_hw: tuple[int, int]  # size the image was resized to for the descriptor pass


def load_shape(height: int, width: int, load_size: int, patch: int) -> tuple[int, int]:
    """Resize target: shorter side `load_size`, aspect kept, both sides multiples of `patch`."""
    scale = load_size / min(height, width)
    return (max(patch, round(height * scale / patch) * patch),
            max(patch, round(width * scale / patch) * patch))


class ViTFeatures:
    """A timm ViT with weights from a local file, extracting descriptors and saliency maps."""

    def __init__(self, arch: str, weights: dict, device: str = "cpu", key: str = "coseg.model"):
        import timm
        import torch

        from miqd.models.weights import fit_report, load_state_dict

        self.key = key
        if not timm.is_model(arch):
            raise InputError(f"{key}.arch: timm has no architecture {arch!r} (timm {timm.__version__})")
        path = Path(weights["file"])
        if not path.is_file():
            raise InputError(
                f"{key}.weights.file: {path} does not exist; put the ViT checkpoint there (for DINO "
                f"ViT-S/8: dino_deitsmall8_pretrain.pth from the DINO repository, or timm's "
                f"vit_small_patch8_224.dino model.safetensors)"
            )
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        except TypeError as err:
            raise InputError(f"{key}.arch: {arch} is not a ViT with a dynamic image size ({err})") from None
        blocks = getattr(model, "blocks", None)
        if blocks is None or not hasattr(model, "patch_embed") or not all(
                hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in blocks):
            raise InputError(f"{key}.arch: {arch} is not a plain ViT (patch embedding + blocks with qkv attention)")
        # the `dino` key map takes the backbone out of DINO / timm files: teacher or student
        # unwrapped, `module.` / `backbone.` prefixes and the head (projection or classifier) dropped
        sd = load_state_dict(path, {**weights, "key_map": "dino"}, arch, key, f"{key}.weights")
        report = fit_report(model.state_dict(), sd)
        if report:
            raise InputError(f"{key}.weights.file: checkpoint {path} does not fit {arch} ({report}); "
                             f"check {key}.arch")
        model.load_state_dict(sd, strict=True)
        self.model = model.eval().to(device)
        self.device = device
        self.patch = int(model.patch_embed.patch_size[0])
        self.depth = len(blocks)
        self.num_heads = int(blocks[-1].attn.num_heads)
        cfg = timm.data.resolve_data_config({}, model=model)
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)

    def check(self, stride: int, layer: int, heads: list[int]) -> None:
        if self.patch % stride:
            raise InputError(f"{self.key}: stride {stride} must divide the patch size {self.patch}")
        if not 0 <= layer < self.depth:
            raise InputError(f"{self.key}: layer {layer} is out of range 0..{self.depth - 1}")
        bad = [h for h in heads if h >= self.num_heads]
        if bad:
            raise InputError(f"{self.key}: saliency_heads {bad} out of range; the model has "
                             f"{self.num_heads} heads")

    # --- passes ---------------------------------------------------------------------------

    def _tensor(self, images: list[np.ndarray], hw: tuple[int, int]):
        import torch

        resized = [np.asarray(Image.fromarray(im).resize((hw[1], hw[0]), Image.LANCZOS)) for im in images]
        x = torch.from_numpy(np.stack(resized)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return (x - self.mean) / self.std

    def _tokens_into(self, x, stride: int, layer: int):
        """Tokens entering block `layer`, and the patch grid, at patch-embedding `stride`."""
        m = self.model
        m.patch_embed.proj.stride = (stride, stride)
        x = m.patch_embed(x)  # (B, gh, gw, C) with dynamic_img_size
        grid = (int(x.shape[1]), int(x.shape[2]))
        x = m.norm_pre(m.patch_drop(m._pos_embed(x)))
        for block in m.blocks[:layer]:
            x = block(x)
        return x, grid

    @staticmethod
    def _qkv(block, x):
        attn = block.attn
        b, t, _ = x.shape
        qkv = attn.qkv(block.norm1(x)).reshape(b, t, 3, attn.num_heads, -1)
        q, k, v = qkv.unbind(2)  # (B, T, heads, head_dim)
        return attn.q_norm(q), attn.k_norm(k), v

    def descriptors(self, x, stride: int, layer: int, facet: str):
        """(B, tokens, dim) descriptors of the patch tokens, and the grid."""
        tokens, grid = self._tokens_into(x, stride, layer)
        block = self.model.blocks[layer]
        if facet == "token":
            out = block(tokens)
        else:
            q, k, v = self._qkv(block, tokens)
            out = {"query": q, "key": k, "value": v}[facet].flatten(2)
        return out[:, self.model.num_prefix_tokens:], grid

    def saliency(self, x, heads: list[int]):
        """(B, tokens) CLS attention of the last block, mean over `heads`, min-max per image."""
        import torch

        last = self.depth - 1
        tokens, grid = self._tokens_into(x, self.patch, last)
        q, k, _ = self._qkv(self.model.blocks[last], tokens)
        scale = self.model.blocks[last].attn.scale
        logits = torch.einsum("bhd,bthd->bht", q[:, 0] * scale, k)
        attn = logits.softmax(-1)[:, heads, self.model.num_prefix_tokens:].mean(1)
        lo, hi = attn.min(1, keepdim=True)[0], attn.max(1, keepdim=True)[0]
        return (attn - lo) / (hi - lo).clamp_min(1e-12), grid

    def extract(self, images: list[np.ndarray], load_size: int = 224, stride: int = 4,
                layer: int = 11, facet: str = "key", heads: tuple[int, ...] = (0, 2, 4, 5),
                saliency_scale: float = 0.5, batch_size: int = 4) -> list[ImageFeatures]:
        """Features of each image (RGB uint8); images of the same load size share a batch."""
        import torch

        heads = list(heads)
        self.check(stride, layer, heads)
        shapes = [load_shape(im.shape[0], im.shape[1], load_size, self.patch) for im in images]
        order = sorted(range(len(images)), key=lambda i: (shapes[i], i))
        out: list[ImageFeatures | None] = [None] * len(images)
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < batch_size and shapes[batches[-1][0]] == shapes[i]:
                batches[-1].append(i)
            else:
                batches.append([i])
        with torch.inference_mode():
            for rows in batches:
                lh, lw = shapes[rows[0]]
                batch = [images[i] for i in rows]
                desc, grid = self.descriptors(self._tensor(batch, (lh, lw)), stride, layer, facet)
                sal_hw = load_shape(lh, lw, max(self.patch, round(min(lh, lw) * saliency_scale)), self.patch)
                sal, sal_grid = self.saliency(self._tensor(batch, sal_hw), heads)
                desc = desc.float().cpu().numpy()
                sal = sal.float().cpu().numpy()
                for j, i in enumerate(rows):
                    s = sal[j].reshape(sal_grid)
                    if sal_grid != grid:
                        s = cv2.resize(s, (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST)
                    out[i] = ImageFeatures(desc[j], s.reshape(-1).astype(np.float32), grid, (lh, lw))
        return out  # type: ignore[return-value]
