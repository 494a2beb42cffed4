"""Region-weighted mixing of two whole-image distortion levels through a soft ROI mask.

Upstream MIQD-2.5M recipe (DESIGN.md §3.3): the soft mask is the binary ROI mask blurred with a
65x65 Gaussian, with the mask eroded (3x3, two iterations) forced to exactly 1, so the object's
interior keeps the ROI level untouched. The image is `roi * m + bg * (1 - m)`; in the transition
band 0.05 < m < 0.95 it is averaged 50/50 with a 3x3 Gaussian blur of itself to hide the seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from miqd.distort.corruptions import to_uint8


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

    weight: np.ndarray  # (H, W, 1) float32 in [0, 1], 1 = ROI
    band: np.ndarray  # (H, W) bool, the seam where the result is smoothed
    smooth_kernel: int


def soft_mask(mask: np.ndarray, settings: BlendSettings = BlendSettings()) -> SoftMask:
    binary = mask.astype(np.uint8)
    k = settings.kernel
    weight = cv2.GaussianBlur(binary.astype(np.float32), (k, k), 0)
    core = cv2.erode(
        binary,
        np.ones((settings.erode_kernel, settings.erode_kernel), np.uint8),
        iterations=settings.erode_iterations,
    )
    weight[core > 0] = 1.0
    band = (weight > settings.band_low) & (weight < settings.band_high)
    return SoftMask(weight[..., None], band, settings.smooth_kernel)


def blend(roi_image: np.ndarray, bg_image: np.ndarray, soft: SoftMask) -> np.ndarray:
    """ROI pixels from `roi_image`, background pixels from `bg_image`, a smoothed seam between."""
    m = soft.weight
    out = roi_image.astype(np.float32) * m + bg_image.astype(np.float32) * (1.0 - m)
    if soft.band.any():
        k = soft.smooth_kernel
        smoothed = cv2.GaussianBlur(out, (k, k), 0)
        out[soft.band] = 0.5 * out[soft.band] + 0.5 * smoothed[soft.band]
    return to_uint8(out)
