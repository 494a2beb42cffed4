"""MIQD-2.5M's recipe against committed outputs of the authors' generator (no reference needed).

tests/fixtures/miqd25m/ was written once by tests/conformance/make_golden.py from the generator
itself: its candidate table, digests of its pixels for every (corruption, candidate) on a small
photo crop, and digests of all 250 images its three steps made from a larger crop and ROI mask.
Digests are of decoded pixels, so any difference at all fails; the message names the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conformance.make_golden import pixels_digest
from miqd import layout
from miqd.distort.corruptions import get_corruption
from miqd.distort.engine import DistortSettings, distort_image
from miqd.distort.levels import SeverityScheme
from miqd.distort.reference import LegacyRandom

FIXTURES = Path(__file__).parent / "fixtures" / "miqd25m"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
SCHEME = SeverityScheme("miqd25m")
HINT = (f"(the fixtures were made with {GOLDEN['versions']}; after upgrading one of these, rerun "
        "tests/conformance/make_golden.py against the generator)")


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / name).convert("RGB"))


def test_candidate_table_is_the_generators():
    for name, rows in GOLDEN["candidates"].items():
        assert [list(p) for p in SCHEME.candidates(name)] == rows, name
    assert list(SCHEME.ranks) == GOLDEN["ranks"]


@pytest.mark.parametrize("name", GOLDEN["corruptions"])
def test_every_candidate_gives_the_generators_pixels(name):
    image = _rgb("small.png")
    corruption = get_corruption(name)
    calls = [c for c in GOLDEN["per_candidate"] if c["corruption"] == name]
    assert len(calls) == 12
    for call in calls:
        params = SCHEME.candidates(name)[call["candidate"] - 1]
        out = corruption.apply(image, params, LegacyRandom(call["seed"]), SCHEME.variant)
        assert pixels_digest(out) == call["sha256"], f"{name} candidate {call['candidate']} differs {HINT}"


def test_all_250_images_of_a_source_are_the_generators():
    """Levels (12 candidates ranked by PSNR, ranks 1,5,8,10,12 kept) and the 200 fused images, fed
    the stream the generator seeds for the image (its set_seed(index + seed_offset))."""
    image, mask = _rgb("large.png"), np.asarray(Image.open(FIXTURES / "large_mask.png")) > 0
    stream = LegacyRandom(GOLDEN["pipeline"]["seed_offset"])
    settings = DistortSettings(tuple(GOLDEN["corruptions"]), SCHEME)
    image_id = GOLDEN["image_id"]
    files = GOLDEN["pipeline"]["files"]
    seen = set()
    for d in distort_image(image, mask, image_id, settings, streams=lambda c, k: stream):
        name = layout.distorted_name(image_id, d.corruption, d.roi_level, d.bg_level)
        assert pixels_digest(d.image) == files[name], f"{name} differs {HINT}"
        seen.add(name)
    assert seen == set(files)
