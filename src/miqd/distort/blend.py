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
    inside: np.ndarray  # (H, W) uint8, 1 where the weight is exactly 1
    box: tuple[slice, slice] | None  # rows, cols holding every fractional weight, plus a margin
    smooth_kernel: int
    # the weights and the seam inside `box`, laid out for cv2's per-element arithmetic
    box_weight: np.ndarray | None = None  # (h, w, 3) float32
    box_complement: np.ndarray | None = None  # 1 - box_weight
    box_band: np.ndarray | None = None  # (h, w) uint8


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
    fractional = (weight > 0) & (weight < 1)
    box = None
    if fractional.any():
        # the seam smoothing reads a (k x k) neighbourhood, so keep k // 2 + 1 pixels around
        margin = settings.smooth_kernel // 2 + 1
        rows, cols = np.flatnonzero(fractional.any(1)), np.flatnonzero(fractional.any(0))
        h, w = weight.shape
        box = (
            slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
        )
    inside = (weight == 1.0).astype(np.uint8)
    if box is None:
        return SoftMask(weight[..., None], band, inside, None, settings.smooth_kernel)
    w3 = np.repeat(weight[box][..., None], 3, axis=2)
    return SoftMask(weight[..., None], band, inside, box, settings.smooth_kernel,
                    w3, 1.0 - w3, band[box].astype(np.uint8))


def blend(roi_image: np.ndarray, bg_image: np.ndarray, soft: SoftMask) -> np.ndarray:
    """ROI pixels from `roi_image`, background pixels from `bg_image`, a smoothed seam between.

    Pixels of weight 0 or 1 are copied; the arithmetic runs only on the box around the seam.
    """
    out = bg_image.copy()
    cv2.copyTo(roi_image, soft.inside, out)
    if soft.box is None:
        return out
    ys, xs = soft.box
    region = cv2.add(
        cv2.multiply(roi_image[ys, xs].astype(np.float32), soft.box_weight),
        cv2.multiply(bg_image[ys, xs].astype(np.float32), soft.box_complement),
    )
    k = soft.smooth_kernel
    averaged = cv2.addWeighted(region, 0.5, cv2.GaussianBlur(region, (k, k), 0), 0.5, 0)
    cv2.copyTo(averaged, soft.box_band, region)
    out[ys, xs] = to_uint8(region)
    return out
