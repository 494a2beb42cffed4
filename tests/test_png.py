"""The fast PNG writer: standard files that every decoder reads back to the same pixels."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from miqd import png
from miqd.io import encode_png


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (37, 53, 3), (300, 451, 3)])
def test_pillow_and_opencv_decode_the_same_pixels(shape):
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = png.encode(x)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # chunk CRCs and structure
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and im.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(im), x)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[..., ::-1], x)


def test_every_row_is_average_filtered_and_deflated(small_image):
    data = png.encode(small_image, level=2)
    assert data[:8] == png.SIGNATURE and data[12:16] == b"IHDR"
    length = int.from_bytes(data[33:37], "big")
    assert data[37:41] == b"IDAT"
    raw = zlib.decompress(data[41:41 + length])
    h, w = small_image.shape[:2]
    rows = np.frombuffer(raw, np.uint8).reshape(h, w * 3 + 1)
    assert set(rows[:, 0]) == {3}
    assert data.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize("level", png.LEVELS)
def test_levels_trade_size_for_nothing_but_time(level, demo_images):
    x = demo_images["demo_val_00000001"]
    with Image.open(io.BytesIO(png.encode(x, level))) as im:
        np.testing.assert_array_equal(np.asarray(im), x)


def test_both_encoders_of_the_distort_stage_write_the_same_pixels(small_image):
    for data in (encode_png(small_image, "isal", 1), encode_png(small_image, "zlib", 1, "rle")):
        with Image.open(io.BytesIO(data)) as im:
            np.testing.assert_array_equal(np.asarray(im), small_image)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="need an \\(H, W, 3\\) uint8 image"):
        png.encode(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="ISA-L compression level 5 is not one of"):
        png.encode(np.zeros((4, 4, 3), np.uint8), 5)
