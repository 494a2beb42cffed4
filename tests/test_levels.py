"""Severity schemes: which whole-image distortions become levels 1..5."""

from __future__ import annotations

import numpy as np
import pytest

from miqd.distort.corruptions import IMAGENET_C, Corruption, available_corruptions, get_corruption
from miqd.distort.engine import DistortSettings, distort_image
from miqd.distort.levels import SeverityScheme, compute_levels
from miqd.errors import InputError
from miqd.seeding import rng_for


def test_miqd25m_is_the_default_with_12_candidates_per_corruption():
    scheme = SeverityScheme()
    assert scheme.name == "miqd25m" and scheme.ranked and scheme.ranks == (1, 5, 8, 10, 12)
    for name in available_corruptions():
        assert len(scheme.candidates(name)) == 12
    noise = [p[0] for p in scheme.candidates("gaussian_noise")]
    assert noise[0] == 0.01 and noise[-1] == 1.0 and np.allclose(np.diff(np.log(noise)), np.log(100) / 11)
    assert [int(p[0]) for p in scheme.candidates("jpeg_compression")] == [100, 90, 81, 72, 63, 54, 45, 36,
                                                                            27, 18, 9, 0]
    snow = scheme.candidates("snow")
    assert snow[0] == (0.05, 0.1, 1, 0.3, 5, 2, 1) and snow[-1] == pytest.approx((0.6, 0.4, 5, 0.9, 15, 15, 0.5))
    assert [int(p[2]) for p in scheme.candidates("glass_blur")].count(0) == 8  # 8 of 12 never shuffle


def test_imagenet_c_levels_are_the_five_constants_unranked(small_image):
    scheme = SeverityScheme("imagenet_c")
    c = get_corruption("glass_blur")
    cal = compute_levels(c, small_image, "img", scheme, seed=4)
    assert [lv.level for lv in cal.levels] == [1, 2, 3, 4, 5]
    assert [lv.candidate for lv in cal.levels] == [1, 2, 3, 4, 5]
    assert [lv.params for lv in cal.levels] == [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]
    for lv in cal.levels:
        expected = c.apply(small_image, lv.params, rng_for(4, "img", "glass_blur", lv.candidate), IMAGENET_C)
        np.testing.assert_array_equal(lv.image, expected)


@pytest.mark.parametrize("name", available_corruptions())
def test_miqd25m_levels_fall_in_psnr_and_sit_at_ranks_1_5_8_10_12(name, small_image):
    cal = compute_levels(get_corruption(name), small_image, "img", SeverityScheme(), seed=0)
    assert len(cal.rows) == 12
    assert sorted(r["rank"] for r in cal.rows) == list(range(1, 13))
    assert [r["candidate"] for r in cal.rows] == list(range(1, 13))
    kept = {r["rank"]: r["level"] for r in cal.rows if r["level"] is not None}
    assert kept == {1: 1, 5: 2, 8: 3, 10: 4, 12: 5}
    by_rank = sorted(cal.rows, key=lambda r: r["rank"])
    assert [r["rank_psnr"] for r in by_rank] == sorted((r["rank_psnr"] for r in cal.rows), reverse=True)
    assert [lv.psnr for lv in cal.levels] == [r["psnr"] for r in by_rank if r["level"] is not None]


def test_small_sources_are_ranked_on_161_px_copies_as_the_generator_ranks_them(small_image):
    """96x128 < 161: the rank follows the PSNR of copies upscaled to a 161-px side with Pillow's
    default filter; the written levels and their PSNR stay at the source's size."""
    from PIL import Image

    from miqd.fidelity import psnr

    cal = compute_levels(get_corruption("gaussian_noise"), small_image, "img", SeverityScheme(), seed=0)
    size = (int(128 * 161 / 96), 161)
    up = lambda x: np.asarray(Image.fromarray(x).resize(size))  # noqa: E731
    for lv, row in zip(cal.levels, [r for r in sorted(cal.rows, key=lambda r: r["rank"]) if r["level"]]):
        assert lv.image.shape == small_image.shape
        assert row["psnr"] == psnr(small_image, lv.image)
        assert row["rank_psnr"] == psnr(up(small_image), up(lv.image)) != row["psnr"]
    plain = compute_levels(get_corruption("gaussian_noise"), small_image, "img",
                           SeverityScheme(rank_min_side=0), seed=0)
    assert all(r["rank_psnr"] == r["psnr"] for r in plain.rows)


def test_equal_psnrs_keep_candidate_order(small_image, monkeypatch):
    """The generator's sort is stable: a tie goes to the earlier candidate."""
    import miqd.distort.levels as levels

    monkeypatch.setattr(levels, "psnr", lambda a, b: 30.0)
    cal = compute_levels(get_corruption("contrast"), small_image, "img", SeverityScheme(), seed=0)
    assert [lv.candidate for lv in cal.levels] == [1, 5, 8, 10, 12]


def test_custom_ranks(small_image):
    scheme = SeverityScheme("miqd25m", (1, 2, 3, 4, 6))
    cal = compute_levels(get_corruption("contrast"), small_image, "img", scheme, seed=0)
    assert [lv.candidate for lv in cal.levels] == [1, 2, 3, 4, 6]  # contrast falls monotonically


@pytest.mark.parametrize(
    "name, ranks, message",
    [
        ("miqd25m", (1, 2, 3, 4, 13), r"distort\.ranks \[1, 2, 3, 4, 13\]: need 5 ranks in 1\.\.12"),
        ("miqd25m", (1, 3, 2, 4, 5), "strictly increasing"),
        ("fancy", (1, 5, 8, 10, 12), r"'fancy' is unknown; allowed: miqd25m, imagenet_c"),
        ("psnr_ranked", (1, 5, 8, 10, 12), r"was replaced by miqd25m"),
    ],
)
def test_invalid_schemes_name_the_key(name, ranks, message):
    with pytest.raises(InputError, match=message):
        SeverityScheme(name, ranks)


@pytest.mark.parametrize("scheme, calls", [("imagenet_c", 50), ("miqd25m", 120)])
def test_corruption_calls_per_source(scheme, calls, small_image, monkeypatch):
    """50 calls under fixed constants; 10 x 12 candidates under MIQD-2.5M's; never per pair."""
    count = {"n": 0}
    original = Corruption.bind

    def counting(self, image, variant):
        bound = original(self, image, variant)

        def call(params, rng):
            count["n"] += 1
            return bound(params, rng)

        return call

    monkeypatch.setattr(Corruption, "bind", counting)
    mask = np.zeros(small_image.shape[:2], bool)
    mask[20:70, 30:90] = True
    settings = DistortSettings(tuple(available_corruptions()), SeverityScheme(scheme))
    outputs = list(distort_image(small_image, mask, "img", settings))
    assert len(outputs) == 250
    assert count["n"] == calls
