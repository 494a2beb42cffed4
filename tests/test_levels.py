"""Severity schemes: which whole-image distortions become levels 1..5."""

from __future__ import annotations

import numpy as np
import pytest

from miqd.distort.corruptions import Corruption, available_corruptions, get_corruption
from miqd.distort.engine import DistortSettings, distort_image
from miqd.distort.levels import SeverityScheme, compute_levels
from miqd.io import InputError
from miqd.seeding import rng_for


def test_imagenet_c_levels_are_the_five_constants(small_image):
    c = get_corruption("glass_blur")
    cal = compute_levels(c, small_image, "img", SeverityScheme("imagenet_c"), seed=4)
    assert [lv.level for lv in cal.levels] == [1, 2, 3, 4, 5]
    assert [lv.params for lv in cal.levels] == list(c.imagenet_c)
    for lv in cal.levels:
        expected = c(small_image, lv.level, rng_for(4, "img", "glass_blur", float(lv.level)))
        np.testing.assert_array_equal(lv.image, expected)


@pytest.mark.parametrize("name", available_corruptions())
def test_psnr_ranked_levels_fall_in_psnr_and_sit_at_the_configured_ranks(name, small_image):
    scheme = SeverityScheme("psnr_ranked")
    cal = compute_levels(get_corruption(name), small_image, "img", scheme, seed=0)
    assert len(cal.rows) == 12
    assert sorted(r["rank"] for r in cal.rows) == list(range(1, 13))
    psnrs = [lv.psnr for lv in cal.levels]
    assert psnrs == sorted(psnrs, reverse=True)
    kept = {r["rank"]: r["level"] for r in cal.rows if r["level"] is not None}
    assert kept == {1: 1, 5: 2, 8: 3, 10: 4, 12: 5}
    # rank 1 is the candidate with the highest PSNR
    assert cal.levels[0].psnr == max(r["psnr"] for r in cal.rows)


def test_psnr_ranked_default_grid_lands_on_imagenet_c_for_monotone_corruptions(small_image):
    cal = compute_levels(get_corruption("contrast"), small_image, "img", SeverityScheme(), seed=0)
    assert [lv.severity for lv in cal.levels] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_custom_ranks_and_candidates(small_image):
    scheme = SeverityScheme("psnr_ranked", (1, 2, 3, 4, 5, 1.5), (1, 2, 3, 4, 6))
    cal = compute_levels(get_corruption("contrast"), small_image, "img", scheme, seed=0)
    # PSNR order of contrast: 1, 1.5, 2, 3, 4, 5 -> ranks 1,2,3,4,6 = severities 1, 1.5, 2, 3, 5
    assert [lv.severity for lv in cal.levels] == [1.0, 1.5, 2.0, 3.0, 5.0]


@pytest.mark.parametrize(
    "candidates, ranks, message",
    [
        ((1, 2, 3, 4, 5), (1, 2, 3, 4, 6), r"need 5 ranks in 1\.\.5"),
        ((1, 2, 3, 4, 5), (1, 3, 2, 4, 5), "strictly increasing"),
        ((1, 2, 3, 4, 7), (1, 2, 3, 4, 5), r"candidate_severities: 7 is out of range 1\.\.5"),
    ],
)
def test_invalid_schemes_name_the_key(candidates, ranks, message):
    with pytest.raises(InputError, match=message):
        SeverityScheme("psnr_ranked", candidates, ranks)


@pytest.mark.parametrize("scheme, calls", [("imagenet_c", 50), ("psnr_ranked", 120)])
def test_corruption_calls_per_source(scheme, calls, small_image, monkeypatch):
    """50 calls under fixed constants; 10 x 12 candidates under PSNR ranking; never per pair."""
    count = {"n": 0}
    original = Corruption.apply

    def counting(self, image, params, rng):
        count["n"] += 1
        return original(self, image, params, rng)

    monkeypatch.setattr(Corruption, "apply", counting)
    mask = np.zeros(small_image.shape[:2], bool)
    mask[20:70, 30:90] = True
    settings = DistortSettings(tuple(available_corruptions()), SeverityScheme(scheme))
    outputs = list(distort_image(small_image, mask, "img", settings))
    assert len(outputs) == 250
    assert count["n"] == calls
