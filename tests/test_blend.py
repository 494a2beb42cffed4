"""The soft-mask region blend against an independent float64 implementation."""

from __future__ import annotations

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
    soft = soft_mask(mask)
    w = soft.weight[..., 0]
    core = ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=2)
    assert np.all(w[core] == 1.0)
    assert w[0, 0] == 0.0 and w[159, 199] == 0.0  # more than 32 px from the ROI
    assert 0 < w[40, 60] < 1  # a corner of the ROI is inside the seam


def test_soft_mask_is_a_65x65_gaussian_of_the_binary_mask(mask):
    """cv2's default sigma for a 65-tap kernel is 0.3 * (32 - 1) + 0.8 = 10.1."""
    soft = soft_mask(mask).weight[..., 0]
    sigma = 0.3 * ((65 - 1) * 0.5 - 1) + 0.8
    expected = ndimage.gaussian_filter(mask.astype(float), sigma, mode="mirror", truncate=32 / sigma)
    outside_core = ~ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=2)
    np.testing.assert_allclose(soft[outside_core], expected[outside_core], atol=1e-5)


def test_blend_equals_the_formula_with_a_smoothed_seam(mask):
    rng = np.random.default_rng(3)
    roi = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    soft = soft_mask(mask)
    m = soft.weight.astype(np.float64)
    out = roi * m + bg * (1 - m)
    k = np.array([0.25, 0.5, 0.25])  # cv2's 3-tap Gaussian
    smoothed = ndimage.correlate1d(ndimage.correlate1d(out, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
    band = (m[..., 0] > 0.05) & (m[..., 0] < 0.95)
    out[band] = 0.5 * out[band] + 0.5 * smoothed[band]
    expected = np.clip(out, 0, 255).astype(np.uint8)
    got = blend(roi, bg, soft)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # float32 vs float64 truncation only
    core = m[..., 0] == 1.0
    np.testing.assert_array_equal(got[core], roi[core])
    far = m[..., 0] == 0.0
    np.testing.assert_array_equal(got[far], bg[far])


def test_settings_change_the_mask(mask):
    narrow = soft_mask(mask, BlendSettings(kernel=9)).weight
    wide = soft_mask(mask).weight
    assert (narrow > 0).sum() < (wide > 0).sum()


def test_empty_mask_gives_the_background_image():
    empty = np.zeros((64, 64), dtype=bool)
    roi = np.full((64, 64, 3), 200, np.uint8)
    bg = np.full((64, 64, 3), 10, np.uint8)
    np.testing.assert_array_equal(blend(roi, bg, soft_mask(empty)), bg)
