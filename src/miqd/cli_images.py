"""Image files a `miqd` command writes: the format follows the file name's suffix.

`--out x.jpg` writing PNG bytes would mislead every viewer and tool that trusts the name, so an
output's suffix picks its encoder, and a suffix with no encoder is an error before any work is done.
PNG goes through miqd.io.encode_png (the bytes the workflow writes); the others through Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from miqd.errors import InputError

if TYPE_CHECKING:  # the parser imports SUPPORTED; numpy loads only when an image is written
    import numpy as np

JPEG_QUALITY = 95
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}
PNG_ONLY = {".png": "PNG"}  # what the plotting commands write
SUPPORTED = (".png, .jpg/.jpeg (JPEG quality 95), .webp (lossless), .bmp, .tif/.tiff "
             "(lossless, LZW)")


def image_format(path: str | Path, option: str = "--out",
                 formats: dict[str, str] | None = None) -> str:
    """The Pillow format name `path`'s suffix asks for; an InputError naming the suffix otherwise.

    `formats` narrows the choice for a command that can write fewer formats (its plots are PNG).
    """
    formats = FORMATS if formats is None else formats
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        what = f"suffix {Path(path).suffix!r}" if suffix else "no suffix"
        supported = SUPPORTED if formats is FORMATS else ", ".join(formats)
        raise InputError(f"{option} {path}: {what} names no image format this command writes; "
                         f"the format follows the suffix, one of: {supported}")
    return formats[suffix]


def encode_image(rgb: np.ndarray, fmt: str) -> bytes:
    """The bytes of an RGB uint8 image in Pillow format `fmt` (as `image_format` returns it)."""
    if fmt == "PNG":
        from miqd.io import encode_png

        return encode_png(rgb)
    from PIL import Image

    options = {"JPEG": {"quality": JPEG_QUALITY}, "WEBP": {"lossless": True},
               "TIFF": {"compression": "tiff_lzw"}}.get(fmt, {})
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image(path: str | Path, rgb: np.ndarray, option: str = "--out") -> None:
    """Write `rgb` to `path` (atomically) in the format its suffix names."""
    from miqd.io import write_bytes

    write_bytes(path, encode_image(rgb, image_format(path, option)))

