"""Full-reference fidelity of a distorted image to its original: PSNR and SSIM (pure functions).

PSNR is over all RGB values with peak 255 (inf for identical images). SSIM is Wang et al. (2004)
with the usual settings (Gaussian window sigma 1.5, 11 taps, K1 0.01, K2 0.03, L 255) on BT.601
luma, with a 5-pixel border excluded, i.e. the value of
`skimage.metrics.structural_similarity(luma_a, luma_b, gaussian_weights=True,
use_sample_covariance=False, data_range=255)`. `SSIMReference` caches the statistics of the
original so that scoring 250 distortions of one image filters each of them three times, not five.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_K1, _K2, _L = 0.01, 0.03, 255.0
_C1, _C2 = (_K1 * _L) ** 2, (_K2 * _L) ** 2
_WIN, _SIGMA = 11, 1.5
_PAD = (_WIN - 1) // 2


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    # cv2.norm sums the squared uint8 differences exactly (integers in a float64)
    mse = cv2.norm(reference, image, cv2.NORM_L2SQR) / reference.size
    return math.inf if mse == 0 else 10.0 * math.log10(_L * _L / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B, float64."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _blur(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (_WIN, _WIN), _SIGMA, _SIGMA, borderType=cv2.BORDER_REFLECT)


class SSIMReference:
    """The original's luma statistics, reused for every distortion scored against it."""

    def __init__(self, reference_rgb: np.ndarray):
        self.y = luma(reference_rgb)
        self.mu = _blur(self.y)
        self.mu2_c1 = self.mu * self.mu + _C1
        self.var_c2 = _blur(self.y * self.y) - self.mu * self.mu + _C2

    def __call__(self, image_rgb: np.ndarray) -> float:
        y = luma(image_rgb)
        mu = _blur(y)
        mu2 = mu * mu
        mu_xy = self.mu * mu
        num = (2 * mu_xy + _C1) * (2 * (_blur(self.y * y) - mu_xy) + _C2)
        den = (self.mu2_c1 + mu2) * (self.var_c2 + (_blur(y * y) - mu2))
        s = num / den
        return float(s[_PAD:-_PAD, _PAD:-_PAD].mean())


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return SSIMReference(reference)(image)
