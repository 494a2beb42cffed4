"""Region-weighted mixing of two whole-image distortion levels through a soft ROI mask.

MIQD-2.5M's fuse step, bit for bit: the 0/255 binary mask is blurred as an 8-bit image with a
65x65 Gaussian (the generator's blur_radius 32) and divided by 255, so weights come in steps of
1/255; the mask eroded (3x3, two iterations) is forced to exactly 1, so the object's interior
keeps the ROI level untouched. In float64, `out = roi * m + bg * (1 - m)`; in the band
0.05 < m < 0.95 it is averaged 50/50 with a 3x3 Gaussian blur of itself to hide the seam; the
result is truncated to uint8.

Pixels of weight 0 or 1 are copies of one input (the formula gives them exactly), so the arithmetic
runs only on a box around the seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class BlendSettings:
    kernel: int = 65
    erode_kernel: int = 3
    erode_iterations: int = 2
    band_low: float = 0.05
    band_high: float = 0.95
    smooth_kernel: int = 3


@dataclass(frozen=True)
class SoftMask:
    """Per-image blending weights, computed once and reused for all 200 mixed images."""

    weight: np.ndarray  # (H, W) float64 in [0, 1], 1 = ROI
    inside: np.ndarray  # (H, W) uint8, 1 where the weight is exactly 1
    box: tuple[slice, slice] | None  # rows, cols holding every fractional weight, plus a margin
    smooth_kernel: int
    box_weight: np.ndarray | None = None  # (h, w, 3) float64, the weights inside `box`
    box_complement: np.ndarray | None = None  # 1 - box_weight
    box_band: np.ndarray | None = None  # (h, w) bool, the seam inside `box`


def soft_mask(mask: np.ndarray, settings: BlendSettings = BlendSettings()) -> SoftMask:
    binary = mask.astype(np.uint8) * 255
    k = settings.kernel
    weight = cv2.GaussianBlur(binary, (k, k), 0) / 255.0
    core = cv2.erode(
        binary,
        np.ones((settings.erode_kernel, settings.erode_kernel), np.uint8),
        iterations=settings.erode_iterations,
    )
    weight[core > 0] = 1.0
    inside = (weight == 1.0).astype(np.uint8)
    fractional = (weight > 0) & (weight < 1)
    if not fractional.any():
        return SoftMask(weight, inside, None, settings.smooth_kernel)
    # the seam smoothing reads a (k x k) neighbourhood, so keep k // 2 + 1 pixels around
    margin = settings.smooth_kernel // 2 + 1
    rows, cols = np.flatnonzero(fractional.any(1)), np.flatnonzero(fractional.any(0))
    h, w = weight.shape
    box = (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )
    w3 = np.repeat(weight[box][..., None], 3, axis=2)
    band = (weight[box] > settings.band_low) & (weight[box] < settings.band_high)
    return SoftMask(weight, inside, box, settings.smooth_kernel, w3, 1 - w3, band)


def blend(roi_image: np.ndarray, bg_image: np.ndarray, soft: SoftMask) -> np.ndarray:
    """ROI pixels from `roi_image`, background pixels from `bg_image`, a smoothed seam between."""
    out = bg_image.copy()
    cv2.copyTo(roi_image, soft.inside, out)
    if soft.box is None:
        return out
    ys, xs = soft.box
    region = roi_image[ys, xs] * soft.box_weight + bg_image[ys, xs] * soft.box_complement
    k = soft.smooth_kernel
    averaged = cv2.addWeighted(region, 0.5, cv2.GaussianBlur(region, (k, k), 0), 0.5, 0)
    region[soft.box_band] = averaged[soft.box_band]
    out[ys, xs] = region.astype(np.uint8)
    return out
