"""File I/O shared by every stage: atomic writes, image and mask reading, PNG and Parquet output.

Every output goes through a temporary file in the destination folder and `os.replace`, so a
killed job never leaves a truncated file under the final name.
"""

from __future__ import annotations

import contextlib
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


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def open_image(path) -> Image.Image:
    """PIL's own `Image.open`. Importing ultralytics replaces it with a wrapper that, on a file PIL
    cannot identify, tries to install a HEIF plugin (and without the internet raises
    ModuleNotFoundError): an unreadable source must stay a clear InputError, in any process."""
    opener = Image.open
    if getattr(opener, "__module__", "PIL.Image") != "PIL.Image":
        opener = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", opener)
    return opener(path)
_IMAGE_MISSING = "check the source paths in the config"


def _decode(path: Path, mode: str, what: str, if_missing: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist; {if_missing}")
    try:
        with open_image(path) as im:
            im.load()
            return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except _DECODE_ERRORS as err:
        raise InputError(f"{what} {path} cannot be decoded ({err}); replace or remove the file") from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); grayscale, palette and CMYK are converted."""
    return _decode(Path(path), "RGB", "image", _IMAGE_MISSING)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with open_image(path) as im:
            return im.size
    except FileNotFoundError as err:
        raise InputError(f"image {path} does not exist; {_IMAGE_MISSING}") from err
    except _DECODE_ERRORS as err:
        raise InputError(f"image {path} cannot be read ({err}); replace or remove the file") from err


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Read a binary ROI mask (any non-zero pixel is ROI) and check it is `shape` = (H, W)."""
    path = Path(path)
    arr = _decode(path, "L", "ROI mask", "run the roi stage or fix roi.<dataset>.dir")
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
