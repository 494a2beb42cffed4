"""The soft-mask region blend: MIQD-2.5M's fuse step, checked against its formula on the whole image.

(The generator's own fuse function is compared in test_conformance_generator.py; the 200 fused
images of a golden source in test_golden_recipe.py.)
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from miqd.distort.blend import BlendSettings, blend, soft_mask


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((160, 200), dtype=bool)
    m[40:120, 60:150] = True
    return m


def test_soft_mask_is_one_inside_the_eroded_roi_and_zero_far_away(mask):
    w = soft_mask(mask).weight
    core = ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=2)
    assert np.all(w[core] == 1.0)
    assert w[0, 0] == 0.0 and w[159, 199] == 0.0  # more than 32 px from the ROI
    assert 0 < w[40, 60] < 1  # a corner of the ROI is inside the seam


def test_soft_mask_weights_are_an_8_bit_gaussian_of_the_0_255_mask(mask):
    """Weights come in steps of 1/255 (the generator blurs the mask as uint8) and follow the
    float Gaussian (cv2's sigma for 65 taps: 0.3 * (32 - 1) + 0.8 = 10.1) to within a step."""
    w = soft_mask(mask).weight
    np.testing.assert_array_equal(np.round(w * 255) / 255, w)
    sigma = 0.3 * ((65 - 1) * 0.5 - 1) + 0.8
    expected = ndimage.gaussian_filter(mask.astype(float), sigma, mode="mirror", truncate=32 / sigma)
    outside_core = ~ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=2)
    assert np.abs(w - expected)[outside_core].max() <= 1.5 / 255


def _formula(roi, bg, weight, settings=BlendSettings()):
    """The fuse step's formula on the whole image, in float64, truncated."""
    m = np.stack([weight] * 3, axis=2)
    out = roi * m + bg * (1 - m)
    band = (weight > settings.band_low) & (weight < settings.band_high)
    smoothed = cv2.GaussianBlur(out, (settings.smooth_kernel,) * 2, 0)
    out = np.where(band[..., None], cv2.addWeighted(out, 0.5, smoothed, 0.5, 0), out)
    return out.astype(np.uint8)


@pytest.mark.parametrize("where", ["middle", "corner", "edge"])
def test_blend_is_the_formula_bit_for_bit(where):
    """Computing only a box around the seam changes no pixel, also where the seam meets a border."""
    rng = np.random.default_rng(3)
    roi = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    m = np.zeros((160, 200), bool)
    {"middle": lambda: m.__setitem__((slice(40, 120), slice(60, 150)), True),
     "corner": lambda: m.__setitem__((slice(0, 50), slice(0, 70)), True),
     "edge": lambda: m.__setitem__((slice(30, 160), slice(150, 200)), True)}[where]()
    soft = soft_mask(m)
    got = blend(roi, bg, soft)
    np.testing.assert_array_equal(got, _formula(roi, bg, soft.weight))
    np.testing.assert_array_equal(got[soft.weight == 1.0], roi[soft.weight == 1.0])
    np.testing.assert_array_equal(got[soft.weight == 0.0], bg[soft.weight == 0.0])


def test_settings_change_the_mask(mask):
    narrow = soft_mask(mask, BlendSettings(kernel=9)).weight
    wide = soft_mask(mask).weight
    assert (narrow > 0).sum() < (wide > 0).sum()


def test_empty_and_full_masks_give_one_of_the_inputs():
    roi = np.full((64, 64, 3), 200, np.uint8)
    bg = np.full((64, 64, 3), 10, np.uint8)
    np.testing.assert_array_equal(blend(roi, bg, soft_mask(np.zeros((64, 64), bool))), bg)
    np.testing.assert_array_equal(blend(roi, bg, soft_mask(np.ones((64, 64), bool))), roi)
