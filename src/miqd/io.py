"""File I/O shared by every stage: atomic writes, image and mask reading, PNG and Parquet output.

Every output goes through a temporary file in the destination folder and `os.replace`, so a
killed job never leaves a truncated file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from miqd.errors import InputError


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()  # what open() would give; mkstemp alone would make files 0600


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_sha256(data: bytes) -> str:
    """The content hash that binds a prediction to the image file it was computed from."""
    return hashlib.sha256(data).hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# The largest image (width x height) any stage decodes; config key `max_source_pixels` sets it.
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own warning threshold
_max_pixels = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int) -> None:
    """Decode images up to `limit` pixels; Pillow's decompression-bomb guard moves with it."""
    global _max_pixels
    _max_pixels = int(limit)
    Image.MAX_IMAGE_PIXELS = max(_max_pixels, DEFAULT_MAX_PIXELS)


def open_image(path) -> Image.Image:
    """PIL's own `Image.open`. Importing ultralytics replaces it with a wrapper that, on a file PIL
    cannot identify, tries to install a HEIF plugin (and without the internet raises
    ModuleNotFoundError): an unreadable source must stay a clear InputError, in any process."""
    opener = Image.open
    if getattr(opener, "__module__", "PIL.Image") != "PIL.Image":
        opener = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", opener)
    return opener(path)


_IMAGE_MISSING = "check the source paths in the config"
_WIDE_PNG = ("RGB;16B", "RGBA;16B")  # 16-bit RGB(A): Pillow would keep only the high byte
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """The nearest 8-bit value of each 16-bit one: round(v / 257), the inverse of v8 * 257."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _scaled(im: Image.Image, path, data, pixels: bool = True) -> tuple[np.ndarray | None, str | None]:
    """(RGB uint8, what was converted) of an open image; every conversion is named. Without
    `pixels`, only the note, decoding only where the note depends on the values."""
    mode = im.mode
    if im.format == "PNG" and im.tile and im.tile[0][3] in _WIDE_PNG:
        note = "16-bit RGB scaled to 8 bits (round(v / 257))" + (", alpha dropped" if "A" in im.tile[0][3] else "")
        if not pixels:
            return None, note
        wide = cv2.imdecode(np.frombuffer(data(), np.uint8), cv2.IMREAD_UNCHANGED)
        return _sixteen_to_eight(wide[..., 2::-1]), note
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        note = f"{mode} (16-bit grey) scaled to 8 bits (round(v / 257)), to RGB"
        if not pixels:
            return None, note
        im.load()
        return np.repeat(_sixteen_to_eight(np.asarray(im))[..., None], 3, axis=2), note
    if mode in ("I", "F"):
        im.load()
        values = np.asarray(im)
        if not np.isfinite(values).all() or values.min() < 0:
            raise InputError(f"image {path} ({mode}) has negative or non-finite values: its intensity scale is "
                             f"unknown; convert it to 8-bit RGB")
        top = float(values.max(initial=0))
        if mode == "F" and top <= 1.0:
            grey, note = np.rint(values * 255.0), "F (float grey in 0-1) scaled by 255, to RGB"
        elif top <= 255:
            grey, note = np.rint(values), f"{mode} grey with values 0-255 taken as 8 bits, to RGB"
        elif mode == "I" and top <= 65535:
            return (np.repeat(_sixteen_to_eight(values)[..., None], 3, axis=2),
                    "I grey with values 0-65535 scaled to 8 bits (round(v / 257)), to RGB")
        else:
            raise InputError(f"image {path} ({mode}) has values up to {top:g}: its intensity scale is unknown; "
                             f"convert it to 8-bit RGB")
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2), note
    note = None
    if mode in _ALPHA or (mode == "P" and "transparency" in im.info):
        note = f"{mode}: alpha dropped, to RGB"
    elif mode != "RGB":
        note = f"{mode} converted to RGB"
    if not pixels:
        return None, note
    im.load()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), note


def _decoded(source, path, what: str, pixels: bool = True) -> tuple[np.ndarray | None, str | None]:
    """Open `source` (a path or a binary file object), enforce the size guard, convert."""
    try:
        with open_image(source) as im:
            w, h = im.size
            if w * h > _max_pixels:
                raise InputError(f"{what} {path} is {w}x{h} = {w * h:,} pixels, above the limit of "
                                 f"{_max_pixels:,} (config max_source_pixels); raise the limit to process it")

            def data():
                if hasattr(source, "seek"):
                    source.seek(0)
                    return source.read()
                return Path(source).read_bytes()

            return _scaled(im, path, data, pixels)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{what} {path} is larger than the limit of {_max_pixels:,} pixels (config "
                         f"max_source_pixels); raise the limit to process it") from None
    except _DECODE_ERRORS as err:
        raise InputError(f"{what} {path} cannot be decoded ({err}); replace or remove the file") from err


def decode_image(source, path) -> np.ndarray:
    """An image (a path or a binary file object; `path` names it in messages) as RGB uint8 (H, W, 3).

    Grey, palette and CMYK become RGB; 16-bit and float images are scaled to 8 bits; alpha is
    dropped. Each of those is logged; `conversion` returns the same note for a file."""
    rgb, note = _decoded(source, path, "image")
    if note:
        logging.getLogger("miqd.io").info("image %s: %s", path, note)
    return rgb


def read_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist; {_IMAGE_MISSING}")
    return decode_image(path, path)


def conversion(path: str | os.PathLike) -> str | None:
    """What decoding `path` converts (None for 8-bit RGB): the select table records it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist; {_IMAGE_MISSING}")
    return _decoded(path, path, "image", pixels=False)[1]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with open_image(path) as im:
            return im.size
    except FileNotFoundError as err:
        raise InputError(f"image {path} does not exist; {_IMAGE_MISSING}") from err
    except Image.DecompressionBombError:
        raise InputError(f"image {path} is larger than the limit of {_max_pixels:,} pixels (config "
                         f"max_source_pixels); raise the limit to process it") from None
    except _DECODE_ERRORS as err:
        raise InputError(f"image {path} cannot be read ({err}); replace or remove the file") from err


def _decode_mask(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"ROI mask {path} does not exist; run the roi stage or fix roi.<dataset>.dir")
    try:
        with open_image(path) as im:
            im.load()
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except _DECODE_ERRORS as err:
        raise InputError(f"ROI mask {path} cannot be decoded ({err}); replace or remove the file") from err


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Read a binary ROI mask (any non-zero pixel is ROI) and check it is `shape` = (H, W)."""
    path = Path(path)
    arr = _decode_mask(path)
    if arr.shape != tuple(shape):
        raise InputError(
            f"ROI mask {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image is "
            f"{shape[1]}x{shape[0]}; masks must be pixel-aligned with their source image"
        )
    return arr > 0


PNG_STRATEGIES = {
    "rle": cv2.IMWRITE_PNG_STRATEGY_RLE,
    "default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT,
    "filtered": cv2.IMWRITE_PNG_STRATEGY_FILTERED,
    "huffman_only": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
}


PNG_ENCODERS = ("isal", "zlib")


def encode_png(rgb: np.ndarray, encoder: str = "isal", level: int = 1, strategy: str = "rle") -> bytes:
    """PNG bytes of an RGB uint8 image (lossless whatever the settings).

    `isal` (the default, `miqd.png`): Average-filtered rows deflated by ISA-L, levels 0-3, about six
    times faster than zlib for files a few percent larger. `zlib`: libpng through OpenCV, levels
    0-9 and a zlib strategy; its run-length strategy at level 1 compresses photos about as well as
    level 9 of the default strategy.
    """
    if encoder == "isal":
        from miqd import png

        return png.encode(rgb, level)
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, PNG_STRATEGIES[strategy]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Save a boolean mask as an 8-bit grayscale PNG (0 background, 255 ROI)."""
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    write_bytes(path, buf.tobytes())


def write_table(path: str | os.PathLike, table: pd.DataFrame | pa.Table) -> None:
    """Write a Parquet table atomically; same rows in the same order give the same bytes."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist; run the stage that writes it first")
    return pq.read_table(path).to_pandas()
