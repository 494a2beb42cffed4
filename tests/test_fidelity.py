"""PSNR and SSIM against scikit-image's implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from miqd.fidelity import SSIMReference, luma, psnr, ssim


@pytest.fixture(scope="module")
def pair(demo_images):
    a = demo_images["demo_val_00000005"]
    rng = np.random.default_rng(0)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_equals_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)


def test_psnr_of_identical_images_is_infinite(pair):
    assert psnr(pair[0], pair[0]) == math.inf


def test_ssim_equals_skimage_gaussian_ssim_on_luma(pair):
    a, b = pair
    expected = structural_similarity(
        luma(a), luma(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_cached_reference_gives_the_same_value_for_many_images(pair):
    a, b = pair
    ref = SSIMReference(a)
    assert ref(b) == pytest.approx(ssim(a, b), abs=1e-12)
    assert ref(a) == pytest.approx(1.0, abs=1e-12)


def test_luma_uses_bt601_weights():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(luma(px)[0], [0.299 * 255, 0.587 * 255, 0.114 * 255])
