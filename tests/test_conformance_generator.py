"""The MIQD-2.5M recipe against the authors' generator itself, run beside ours on the same inputs.

Opt-in (MIQD_TEST_REFERENCE=1; CI opts in): see tests/conformance/refenv.py for where the generator
is looked for and the environment it runs in. Without it these tests skip and say why; the golden
tests (test_golden_recipe.py) then check the same recipe against committed outputs of the generator.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conformance import refenv
from helpers import box_mask, demo_roi_mask
from miqd import layout
from miqd.distort.blend import blend, soft_mask
from miqd.distort.corruptions import get_corruption
from miqd.distort.engine import DistortSettings, distort_image
from miqd.distort.levels import SeverityScheme, compute_levels
from miqd.distort.reference import LegacyRandom
from miqd.io import write_mask_png

SCHEME = SeverityScheme("miqd25m")


@pytest.fixture(scope="module")
def generator():
    try:
        return refenv.generator()
    except refenv.Unavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def generator_order(generator):
    return generator.call("candidates")


def test_candidate_table_and_ranks_are_the_generators(generator_order):
    theirs = generator_order["candidates"]
    assert sorted(theirs) == sorted(SCHEME.table["corruptions"])
    for name, rows in theirs.items():
        ours = [list(p) for p in SCHEME.candidates(name)]
        assert ours == rows, f"{name}: candidates differ"  # exact floats, not approximately
    assert list(SCHEME.ranks) == generator_order["ranks"]


def _crops(demo_images) -> dict[str, np.ndarray]:
    return {
        "cat": demo_images["demo_val_00000001"],                       # 451x300, whole photo
        "odd": demo_images["000000000002"][37:84, 101:162].copy(),      # 61x47, kernels wider than it
    }


@pytest.fixture(scope="module")
def every_candidate(generator, generator_order, demo_images):
    """The generator's output for every (corruption, candidate) on two images, seeded per call."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, image in _crops(demo_images).items():
            np.savez(f"{tmp}/image.npz", image=image)
            calls = [(name, k, 1000 * k + i) for i, name in enumerate(generator_order["corruptions"])
                     for k in range(1, 13)]
            generator.call("corrupt", image=f"{tmp}/image.npz", calls=calls, out=f"{tmp}/out.npz")
            for call, out in zip(calls, np.load(f"{tmp}/out.npz")["outputs"], strict=True):
                results[key, *call] = (image, out)
    return results


@pytest.mark.parametrize("name", ["contrast", "pixelate", "jpeg_compression", "defocus_blur", "darkness",
                                  "gaussian_noise", "fog", "snow", "glass_blur", "motion_blur"])
def test_every_candidate_equals_the_generators_output(name, every_candidate):
    corruption = get_corruption(name)
    checked = 0
    for (key, cname, k, seed), (image, expected) in every_candidate.items():
        if cname != name:
            continue
        ours = corruption.apply(image, SCHEME.candidates(name)[k - 1], LegacyRandom(seed), SCHEME.variant)
        assert ours.shape == expected.shape and ours.dtype == np.uint8
        if name == "motion_blur":  # ImageMagick's arithmetic, emulated: within 1 grey level on >= 99 %
            diff = np.abs(ours.astype(int) - expected.astype(int))
            assert (diff <= 1).mean() >= 0.99, f"{key} candidate {k}: {(diff <= 1).mean():.4f} within 1"
        else:
            np.testing.assert_array_equal(ours, expected, err_msg=f"{name} {key} candidate {k}")
        checked += 1
    assert checked == 24


@pytest.mark.parametrize("mask_kind", ["roi", "corner", "empty", "full"])
def test_blend_equals_the_generators_fuse_step(mask_kind, generator, demo_images):
    image = demo_images["demo_val_00000001"]
    h, w = image.shape[:2]
    mask = {
        "roi": demo_roi_mask("demo_val_00000001"),
        "corner": box_mask((h, w), 0, 0, 90, 140),      # the seam runs into two image borders
        "empty": np.zeros((h, w), bool),
        "full": np.ones((h, w), bool),
    }[mask_kind]
    cal = compute_levels(get_corruption("gaussian_noise"), image, "cat", SCHEME, seed=3)
    levels = np.stack([lv.image for lv in cal.levels])
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/in.npz", levels=levels, mask=mask.astype(np.uint8) * 255)
        generator.call("fuse", inputs=f"{tmp}/in.npz", out=f"{tmp}/out.npz")
        theirs = dict(np.load(f"{tmp}/out.npz"))
    soft = soft_mask(mask)
    assert len(theirs) == 20
    for key, expected in theirs.items():
        roi, bg = int(key[2]), int(key[6])
        np.testing.assert_array_equal(blend(levels[roi - 1], levels[bg - 1], soft), expected,
                                      err_msg=f"{mask_kind} {key}")


@pytest.mark.parametrize("crop, min_side", [
    ((slice(32, 208), slice(272, 496)), None),   # 224x176, 45 % ROI
    ((slice(40, 160), slice(300, 450)), 161),    # 150x120: ranked on 161-px copies (--min-side 161)
])
def test_whole_recipe_end_to_end_equals_the_generators_files(crop, min_side, generator, generator_order,
                                                             demo_images, tmp_path):
    """The generator's three steps on files (candidates -> PSNR ranks -> fuse) against our engine
    making the same 250 images, fed the same numpy stream the generator seeds for the image."""
    image_id = "demo_val_00000002"
    image, mask = demo_images[image_id][crop].copy(), demo_roi_mask(image_id)[crop]
    (tmp_path / "src").mkdir()
    Image.fromarray(image).save(tmp_path / "src" / f"{image_id}.png")
    write_mask_png(tmp_path / "masks" / f"{image_id}_binary_mask.png", mask)
    result = generator.call("pipeline", input_dir=str(tmp_path / "src"), images=[f"{image_id}.png"],
                            mask_dir=str(tmp_path / "masks"), work=str(tmp_path / "gen"), seed_offset=1,
                            min_side=min_side)
    folder = Path(result["levels_dir"]) / image_id

    stream = LegacyRandom(0 + 1)  # the generator's set_seed(index + seed_offset)
    settings = DistortSettings(tuple(generator_order["corruptions"]), SCHEME)
    ours = list(distort_image(image, mask, image_id, settings, streams=lambda c, k: stream))
    assert len(ours) == 250
    written = sorted(p.name for p in folder.glob(f"{image_id}_*.png"))
    names = sorted(layout.distorted_name(image_id, d.corruption, d.roi_level, d.bg_level) for d in ours)
    assert written == names
    for d in ours:
        name = layout.distorted_name(image_id, d.corruption, d.roi_level, d.bg_level)
        theirs = np.asarray(Image.open(folder / name).convert("RGB"))
        if d.corruption == "motion_blur":
            diff = np.abs(d.image.astype(int) - theirs.astype(int))
            assert (diff <= 1).mean() >= 0.99, name
        else:
            np.testing.assert_array_equal(d.image, theirs, err_msg=name)
