"""The corruptions against their independent reference, imagecorruptions 1.1.2 (ImageNet-C)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hsv2rgb, rgb2hsv

from miqd.distort.corruptions import available_corruptions, get_corruption
from miqd.distort.reference import LegacyRandom, reference_corrupt
from miqd.io import InputError
from miqd.quality import psnr
from miqd.seeding import rng_for

IMAGENET_C = [c for c in available_corruptions() if c != "darkness"]
DETERMINISTIC = ["contrast", "pixelate", "jpeg_compression", "defocus_blur"]
STOCHASTIC = ["gaussian_noise", "glass_blur", "motion_blur", "snow", "fog"]


def test_registry_is_the_papers_ten_corruptions():
    assert available_corruptions() == [
        "contrast", "pixelate", "jpeg_compression", "motion_blur", "defocus_blur",
        "glass_blur", "fog", "snow", "darkness", "gaussian_noise",
    ]
    assert {c for c in available_corruptions() if get_corruption(c).stochastic} == set(STOCHASTIC)


@pytest.mark.parametrize("name", IMAGENET_C)
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_same_random_stream_gives_the_reference_image_exactly(name, severity, demo_images):
    """Fed the reference's own np.random stream, every ImageNet-C corruption is bit-identical."""
    image = demo_images["demo_val_00000001"]  # 451x300 cat
    seed = 1000 + severity
    expected = reference_corrupt(image, severity, name, seed=seed)
    ours = get_corruption(name)(image, severity, LegacyRandom(seed))
    assert ours.dtype == np.uint8 and ours.shape == image.shape
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_within_one_grey_level_on_every_demo_image(name, demo_images):
    corruption = get_corruption(name)
    for stem, image in demo_images.items():
        for severity in range(1, 6):
            ours = corruption(image, severity, rng_for(0, stem, name, float(severity)))
            expected = reference_corrupt(image, severity, name)
            mad = np.abs(ours.astype(int) - expected.astype(int)).mean()
            assert mad < 1.0, f"{name} s={severity} {stem}: mean abs diff {mad:.3f}"


# draws per image: more where one draw's PSNR depends strongly on a random angle or map
DRAWS = {"gaussian_noise": 1, "glass_blur": 1, "motion_blur": 6, "snow": 4, "fog": 6}


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_corruptions_match_the_reference_in_distribution(name, demo_images):
    """With our own seeding, mean PSNR per severity over the demo images is within 0.5 dB."""
    corruption = get_corruption(name)
    for severity in range(1, 6):
        ours, ref = [], []
        for k, (stem, image) in enumerate(demo_images.items()):
            for draw in range(DRAWS[name]):
                rng = rng_for(draw, stem, name, float(severity))
                ours.append(psnr(image, corruption(image, severity, rng)))
                seed = 7919 * draw + 31 * k + severity
                ref.append(psnr(image, reference_corrupt(image, severity, name, seed=seed)))
        gap = abs(np.mean(ours) - np.mean(ref))
        assert gap < 0.5, f"{name} severity {severity}: mean PSNR {np.mean(ours):.2f} vs {np.mean(ref):.2f}"


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_darkness_is_hsv_value_minus_a_constant(severity, demo_images):
    image = demo_images["demo_val_00000004"]
    c = get_corruption("darkness").imagenet_c[severity - 1][0]
    hsv = rgb2hsv(image / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] - c, 0, 1)
    expected = (np.clip(hsv2rgb(hsv), 0, 1) * 255).astype(np.uint8)  # truncated, as ours
    ours = get_corruption("darkness")(image, severity, rng_for(0, "x", "darkness", 1.0))
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # off by one only where float rounding straddles
    assert ours.mean() < image.mean()


def test_fractional_severity_interpolates_imagenet_c_constants():
    glass = get_corruption("glass_blur")
    assert glass.params_at(2) == (0.9, 2, 1)
    assert glass.params_at(2.5) == pytest.approx((0.95, 2, 2))  # (2+3)/2 = 2.5 rounds half up
    noise = get_corruption("gaussian_noise")
    assert noise.params_at(1.25) == pytest.approx((0.09,))
    assert get_corruption("jpeg_compression").params_at(4.5) == (9,)  # (10+7)/2 = 8.5 -> 9


@pytest.mark.parametrize("severity", [0, 0.99, 5.01, 6])
def test_severity_out_of_range_is_an_error_naming_the_corruption(severity, small_image):
    with pytest.raises(InputError, match=r"severity .* of corruption 'fog' is out of range 1\.\.5"):
        get_corruption("fog")(small_image, severity, rng_for(0, "a", "fog", 1.0))


def test_unknown_corruption_lists_what_exists():
    with pytest.raises(InputError, match="unknown corruption 'frost'; available: contrast, pixelate"):
        get_corruption("frost")


@pytest.mark.parametrize("name", STOCHASTIC)
def test_random_streams_are_keyed_by_image_not_by_call_order(name, small_image):
    c = get_corruption(name)
    a1 = c(small_image, 3, rng_for(0, "img-a", name, 3.0))
    c(small_image, 3, rng_for(0, "img-b", name, 3.0))
    a2 = c(small_image, 3, rng_for(0, "img-a", name, 3.0))
    b = c(small_image, 3, rng_for(0, "img-b", name, 3.0))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b)
