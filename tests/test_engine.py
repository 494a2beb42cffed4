"""The distort stage end to end on small real images: files, names, manifest, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from helpers import box_mask, write_sources
from miqd import layout
from miqd.distort import engine
from miqd.distort.corruptions import available_corruptions, get_corruption
from miqd.distort.levels import SeverityScheme, compute_levels
from miqd.fidelity import luma


@pytest.fixture(scope="module")
def one_source(tmp_path_factory, demo_images):
    tmp = tmp_path_factory.mktemp("engine")
    image = demo_images["demo_val_00000002"][60:220, 100:300].copy()  # 200x160 crop
    mask = box_mask(image.shape[:2], 40, 50, 130, 150)
    select_path, roi_path = write_sources(tmp, {"cup": image}, {"cup": mask})
    settings = engine.DistortSettings(tuple(available_corruptions()), SeverityScheme())
    out = tmp / "out"
    manifest = engine.run(select_path, roi_path, str(tmp / "m.parquet"), str(tmp / "l.parquet"),
                          "imagenet", str(out), settings)
    return dict(tmp=tmp, out=out, image=image, mask=mask, manifest=manifest, settings=settings)


def test_writes_250_pngs_in_the_published_layout(one_source):
    out = one_source["out"]
    files = sorted(p.relative_to(out).as_posix() for p in (out / "miqa_cls" / "images").rglob("*.png"))
    def name(c, r, b):  # the MIQD-2.5M generator's names
        if r == b:
            return f"cup_{c}_{r}.png"
        return f"cup_{c}_{'fg' if r > b else 'bg'}_stronger_fg{r}_bg{b}.png"

    expected = sorted(f"miqa_cls/images/cup/{name(c, r, b)}"
                      for c in available_corruptions() for r in range(1, 6) for b in range(1, 6))
    assert files == expected
    assert (out / "miqa_cls" / "src_images" / "cup.png").is_file()
    assert not list(out.rglob("*.tmp"))


def test_manifest_rows_and_region_types(one_source):
    m = one_source["manifest"]
    assert len(m) == 250
    assert list(m.columns) == [f.name for f in engine.MANIFEST_SCHEMA]
    counts = m.groupby("region_type").size().to_dict()
    assert counts == {"UD": 50, "ROI-DD": 100, "BG-DD": 100}
    assert (m.loc[m.region_type == "ROI-DD", "roi_level"] > m.loc[m.region_type == "ROI-DD", "bg_level"]).all()
    assert set(m.category) == {"digital", "blur", "environment", "noise"}
    assert (m.width == 200).all() and (m.height == 160).all()


def test_manifest_psnr_and_ssim_match_skimage_on_the_written_files(one_source):
    m, out, image = one_source["manifest"], one_source["out"], one_source["image"]
    for row in m.sample(25, random_state=0).itertuples():
        written = np.asarray(Image.open(out / row.path).convert("RGB"))
        assert row.psnr == pytest.approx(peak_signal_noise_ratio(image, written, data_range=255), abs=1e-9)
        expected = structural_similarity(luma(image), luma(written), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=255)
        assert row.ssim == pytest.approx(expected, abs=1e-9)


def test_uniform_images_are_the_corruption_and_mixed_images_take_each_region_from_its_level(one_source):
    out, image, mask = one_source["out"], one_source["image"], one_source["mask"]

    def load(c, r, b):
        return np.asarray(Image.open(out / layout.distorted_relpath("imagenet", "cup", c, r, b)))

    for c in ("gaussian_noise", "fog", "pixelate"):
        cal = compute_levels(get_corruption(c), image, "cup", SeverityScheme(), seed=0)
        level = {lv.level: lv.image for lv in cal.levels}
        for s in range(1, 6):
            np.testing.assert_array_equal(load(c, s, s), level[s])
        mixed = load(c, 5, 1)
        core = np.zeros_like(mask)
        core[42:128, 52:148] = True  # inside the mask eroded by 2 px
        far = np.ones_like(mask)
        far[:, 10:190] = False  # > 32 px from the box
        np.testing.assert_array_equal(mixed[core], level[5][core])
        np.testing.assert_array_equal(mixed[far], level[1][far])


def test_levels_table(one_source):
    levels = pd.read_parquet(one_source["tmp"] / "l.parquet")
    m = one_source["manifest"]
    assert len(levels) == 120  # every candidate: 12 per corruption
    kept = levels.dropna(subset=["level"])
    assert len(kept) == 50
    ranks = kept.sort_values(["corruption", "level"]).groupby("corruption")["rank"].apply(list).to_dict()
    assert ranks == {c: [1, 5, 8, 10, 12] for c in available_corruptions()}
    # the manifest names the candidate each level came from
    ud = m[m.region_type == "UD"].set_index(["corruption", "roi_level"])["roi_severity"]
    for row in kept.itertuples():
        assert ud[row.corruption, int(row.level)] == row.candidate


def test_output_does_not_depend_on_worker_count(tmp_path, demo_images):
    images = {k: demo_images[k][:120, :160].copy() for k in ("demo_val_00000001", "000000000002", "000000000003")}
    masks = {k: box_mask(v.shape[:2], 30, 40, 90, 120) for k, v in images.items()}
    select_path, roi_path = write_sources(tmp_path, images, masks)
    settings = engine.DistortSettings(("glass_blur", "snow", "gaussian_noise"), seed=11)
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        engine.run(select_path, roi_path, str(out / "m.parquet"), str(out / "l.parquet"), "coco",
                   str(out), settings, workers=workers)
        results[workers] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # 25 PNGs per corruption and source, the source copies, their .jpg names for MIQA's det/ins
    # loaders (links: the sources here are PNGs), the two tables
    assert len(results[1]) == 3 * 3 * 25 + 3 + 3 + 2
    for image_id in images:
        link = tmp_path / "w1" / "miqa_det" / "src_images" / f"{image_id}.jpg"
        assert link.is_symlink() and link.readlink().name == f"{image_id}.png"
    assert results[1] == results[2]


def test_a_rerun_clears_what_a_killed_run_left(tmp_path, small_image):
    """A killed job leaves temporaries and a partial set of PNGs; the rerun leaves exactly 25."""
    select_path, roi_path = write_sources(tmp_path, {"a": small_image},
                                          {"a": box_mask(small_image.shape[:2], 10, 10, 60, 60)})
    folder = tmp_path / "out" / "miqa_cls" / "images" / "a"
    folder.mkdir(parents=True)
    (folder / ".a_fog_3.png.k2j4.tmp").write_bytes(b"half a png")
    (folder / "a_fog_3.png").write_bytes(b"truncated")
    settings = engine.DistortSettings(("fog",))
    engine.run(select_path, roi_path, str(tmp_path / "m.parquet"), str(tmp_path / "l.parquet"),
               "imagenet", str(tmp_path / "out"), settings)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 25 and not any(n.startswith(".") for n in names)
    Image.open(folder / "a_fog_3.png").verify()


def test_a_large_source_reports_progress_corruption_by_corruption(tmp_path, small_image, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(engine, "LARGE_SOURCE", 1000)  # the 96x128 crop counts as large here
    select_path, roi_path = write_sources(tmp_path, {"a": small_image},
                                          {"a": box_mask(small_image.shape[:2], 10, 10, 60, 60)})
    with caplog.at_level(logging.INFO, "miqd.distort"):
        engine.run(select_path, roi_path, str(tmp_path / "m.parquet"), str(tmp_path / "l.parquet"), "imagenet",
                   str(tmp_path / "out"), engine.DistortSettings(("contrast", "fog")))
    assert "a: contrast done" in caplog.text and "a: fog done" in caplog.text


def test_the_manifest_holds_the_hash_of_every_written_file(one_source):
    import hashlib

    m, out = one_source["manifest"], one_source["out"]
    for row in m.sample(20, random_state=1).itertuples():
        assert row.sha256 == hashlib.sha256((out / row.path).read_bytes()).hexdigest()
