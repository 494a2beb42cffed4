"""The corruption registry, and its ImageNet-C variant against imagecorruptions 1.1.2 (ImageNet-C's code).

The MIQD-2.5M variant is checked against the authors' generator: test_golden_recipe.py (committed
outputs) and test_conformance_generator.py (the generator itself, opt-in).
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hsv2rgb, rgb2hsv

from miqd.distort.corruptions import (
    IMAGENET_C,
    MIQD25M,
    available_corruptions,
    get_corruption,
    magick_motion_taps,
)
from miqd.distort.levels import SeverityScheme
from miqd.distort.reference import LegacyRandom, reference_corrupt
from miqd.errors import InputError
from miqd.fidelity import psnr
from miqd.seeding import rng_for

IMAGENET_C_NAMES = [c for c in available_corruptions() if c != "darkness"]
STOCHASTIC = ["gaussian_noise", "glass_blur", "motion_blur", "snow", "fog"]
ICS = SeverityScheme("imagenet_c")


def test_registry_is_the_papers_ten_corruptions():
    assert available_corruptions() == [
        "contrast", "pixelate", "jpeg_compression", "motion_blur", "defocus_blur",
        "glass_blur", "fog", "snow", "darkness", "gaussian_noise",
    ]
    assert {c for c in available_corruptions() if get_corruption(c).stochastic} == set(STOCHASTIC)


def test_imagenet_c_has_its_own_definition_exactly_where_it_differs():
    own = {c for c in available_corruptions() if IMAGENET_C in get_corruption(c).implementations}
    assert own == {"glass_blur", "motion_blur", "snow"}
    contrast = get_corruption("contrast")
    assert contrast.implementation(IMAGENET_C) is contrast.implementation(MIQD25M)
    with pytest.raises(InputError, match="unknown corruption variant 'x'"):
        contrast.implementation("x")


@pytest.mark.parametrize("name", IMAGENET_C_NAMES)
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_imagenet_c_variant_on_the_references_stream_is_its_image_exactly(name, severity, demo_images):
    image = demo_images["demo_val_00000001"]  # 451x300 cat
    seed = 1000 + severity
    expected = reference_corrupt(image, severity, name, seed=seed)
    params = ICS.candidates(name)[severity - 1]
    ours = get_corruption(name).apply(image, params, LegacyRandom(seed), IMAGENET_C)
    assert ours.dtype == np.uint8 and ours.shape == image.shape
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("name", ["glass_blur", "fog", "snow"])
def test_imagenet_c_variant_on_every_demo_photo(name, demo_images):
    """Odd sizes and grey content too (the zoomed snow layer can come out a pixel short); glass
    blur's reference takes ~2 s a call, so it sees three of the photos."""
    photos = list(demo_images.values())
    for k, image in enumerate(photos[::3] if name == "glass_blur" else photos):
        severity = 1 + k % 5
        expected = reference_corrupt(image, severity, name, seed=77 + k)
        ours = get_corruption(name).apply(image, ICS.candidates(name)[severity - 1], LegacyRandom(77 + k),
                                          IMAGENET_C)
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("value_drop", [0.015, 0.1, 0.3, 0.7])
def test_darkness_is_scikit_images_hsv_value_minus_a_constant_bit_for_bit(value_drop, demo_images):
    for image in list(demo_images.values())[:4]:
        hsv = rgb2hsv(image / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] - value_drop, 0, 1)
        expected = np.uint8(np.clip(hsv2rgb(hsv), 0, 1) * 255)
        ours = get_corruption("darkness").apply(image, (value_drop,), None)
        np.testing.assert_array_equal(ours, expected)
        assert ours.mean() < image.mean()


def test_darkness_shares_its_hsv_split_between_candidates(small_image):
    bound = get_corruption("darkness").bind(small_image)
    for c in (0.05, 0.5):
        np.testing.assert_array_equal(bound((c,), None), get_corruption("darkness").apply(small_image, (c,), None))


def test_magick_motion_kernel_width_and_direction():
    """ImageMagick: width 2*ceil(radius)+1, taps at ceil(i*cos - .5), ceil(i*sin - .5), weights sum to 1."""
    ox, oy, k = magick_motion_taps(1.4, 0.6, 0.0)
    assert len(k) == 5 and ox.tolist() == [0, 1, 2, 3, 4] and oy.tolist() == [0] * 5
    assert k.sum() == pytest.approx(1.0) and np.all(np.diff(k) < 0)
    ox, oy, k = magick_motion_taps(10.5, 3.5, 90.0)
    assert len(k) == 23 and oy.tolist() == list(range(23)) and set(ox.tolist()) == {0}
    with pytest.raises(ValueError, match="radius must be positive"):
        magick_motion_taps(0, 1, 0)


def test_magick_motion_blur_of_a_flat_image_is_flat(small_image):
    flat = np.full_like(small_image, 117)
    out = get_corruption("motion_blur").apply(flat, (27, 10), rng_for(0, "x", "motion_blur", 1))
    assert np.all(out == 117)  # sum of weights x 117 x 257, rounded to a quantum, // 257


def test_glass_blur_with_zero_iterations_draws_nothing(small_image):
    class NoDraws:
        def integers(self, *a, **k):
            raise AssertionError("drew")

    get_corruption("glass_blur").apply(small_image, (0.4, 1, 0.4), NoDraws())  # int(0.4) == 0 passes


def test_jpeg_quality_is_truncated(small_image):
    jpeg = get_corruption("jpeg_compression")
    np.testing.assert_array_equal(jpeg.apply(small_image, (90.918,), None), jpeg.apply(small_image, (90,), None))
    assert psnr(small_image, jpeg.apply(small_image, (0.1,), None)) < psnr(small_image, jpeg.apply(small_image, (9.2,), None))


def test_unknown_corruption_lists_what_exists():
    with pytest.raises(InputError, match="unknown corruption 'frost'; known: contrast, pixelate"):
        get_corruption("frost")


@pytest.mark.parametrize("name", STOCHASTIC)
def test_random_streams_are_keyed_by_image_not_by_call_order(name, small_image):
    c = get_corruption(name)
    params = SeverityScheme().candidates(name)[8]
    a1 = c.apply(small_image, params, rng_for(0, "img-a", name, 9))
    c.apply(small_image, params, rng_for(0, "img-b", name, 9))
    a2 = c.apply(small_image, params, rng_for(0, "img-a", name, 9))
    b = c.apply(small_image, params, rng_for(0, "img-b", name, 9))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b)
