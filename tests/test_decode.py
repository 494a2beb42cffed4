"""Every source becomes 8-bit RGB the same, named way: 16-bit and float scaled, alpha dropped, size guarded."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from miqd import io
from miqd.errors import InputError
from miqd.io import conversion, read_image


@pytest.fixture(autouse=True)
def default_limit():
    yield
    io.set_max_pixels(io.DEFAULT_MAX_PIXELS)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path, caplog):
    grey = (np.arange(40).reshape(5, 8) * 1600).astype(np.uint16)  # 0 .. 62400
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    with caplog.at_level(logging.INFO, "miqd.io"):
        rgb = read_image(tmp_path / "g.png")
    expected = np.rint(grey / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    assert rgb.max() > 200 and (rgb < 255).mean() > 0.9  # not white, as Pillow's convert("RGB") makes it
    assert "16-bit grey) scaled to 8 bits" in caplog.text
    assert conversion(tmp_path / "g.png") == "I;16 (16-bit grey) scaled to 8 bits (round(v / 257)), to RGB"


def test_16_bit_rgb_is_rounded_not_truncated(tmp_path):
    wide = np.random.default_rng(0).integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), wide[..., ::-1])  # cv2 writes BGR
    rgb = read_image(tmp_path / "c.png")
    np.testing.assert_array_equal(rgb, ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8))
    assert conversion(tmp_path / "c.png").startswith("16-bit RGB scaled to 8 bits")


@pytest.mark.parametrize("values, expected, note", [
    (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255], "F (float grey in 0-1) scaled by 255"),
    (np.array([[0.0, 17.0, 255.0]], np.float32), [0, 17, 255], "F grey with values 0-255 taken as 8 bits"),
])
def test_float_images_are_scaled_by_their_range(tmp_path, values, expected, note):
    Image.fromarray(values, "F").save(tmp_path / "f.tiff")
    assert read_image(tmp_path / "f.tiff")[0, :, 0].tolist() == expected
    assert conversion(tmp_path / "f.tiff").startswith(note)


def test_a_float_image_of_unknown_scale_is_refused(tmp_path):
    Image.fromarray(np.array([[0.0, 300.0]], np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(InputError, match=r"f\.tiff \(F\) has values up to 300: its intensity scale is unknown"):
        read_image(tmp_path / "f.tiff")


def test_alpha_is_dropped_with_a_note(tmp_path, caplog):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with caplog.at_level(logging.INFO, "miqd.io"):
        rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (4, 4, 3) and (rgb[..., 0] == 200).all()
    assert "RGBA: alpha dropped" in caplog.text


def test_plain_rgb_has_no_conversion(tmp_path, small_image):
    Image.fromarray(small_image).save(tmp_path / "x.png")
    assert conversion(tmp_path / "x.png") is None
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), small_image)


def test_an_image_above_the_size_guard_is_refused_naming_the_file_and_key(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    io.set_max_pixels(1000)
    with pytest.raises(InputError, match=r"big\.png is 40x30 = 1,200 pixels, above the limit of 1,000 "
                                         r"\(config max_source_pixels\)"):
        read_image(tmp_path / "big.png")
    io.set_max_pixels(1200)
    assert read_image(tmp_path / "big.png").shape == (30, 40, 3)


def test_a_decompression_bomb_is_an_input_error_not_a_traceback(tmp_path):
    """Pillow itself refuses images above twice its limit at open; that too names the file."""
    Image.new("L", (200, 100)).save(tmp_path / "bomb.png")
    io.set_max_pixels(10_000)
    Image.MAX_IMAGE_PIXELS = 5_000  # as if Pillow's own guard were the tighter one
    with pytest.raises(InputError, match=r"bomb\.png is larger than the limit .* max_source_pixels"):
        read_image(tmp_path / "bomb.png")
    with pytest.raises(InputError, match=r"bomb\.png is larger than the limit"):
        io.image_size(tmp_path / "bomb.png")


def test_the_select_table_records_each_conversion(tmp_path):
    from miqd import select
    from miqd.config import validate

    folder = tmp_path / "val"
    folder.mkdir()
    cv2.imwrite(str(folder / "ILSVRC2012_val_00000001.png"), (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    Image.new("RGB", (64, 64), (9, 9, 9)).save(folder / "ILSVRC2012_val_00000002.png")
    (tmp_path / "gt.txt").write_text("1,tench\n2,goldfish\n")
    cfg = validate({"sources": {"imagenet": {"images": str(folder), "ground_truth": str(tmp_path / "gt.txt"),
                                             "filename_template": "ILSVRC2012_val_{index:08d}.png", "shards": 1}},
                    "select": {"imagenet": {"method": "all"}}, "roi": {"imagenet": {"method": "files",
                                                                                    "dir": str(tmp_path)}}},
                   whole_workflow=False)
    select.run(cfg, "imagenet", 0, str(tmp_path / "s.parquet"))
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column("conversion").to_pylist() == [
        "I;16 (16-bit grey) scaled to 8 bits (round(v / 257)), to RGB", None]
