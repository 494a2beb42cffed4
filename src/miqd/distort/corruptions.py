"""The ten MIQD-2.5M corruptions, as a registry of pure functions of (image, parameters, rng).

Nine follow the ImageNet-C definitions (Hendrycks & Dietterich 2019) as released in the
`imagecorruptions` package, including its quirks, so that images match what the paper's authors
generated; the tests check this against that package. `darkness` is MIQD's own: the HSV value
channel minus a constant, written here as a per-pixel scaling of RGB, which keeps hue and
saturation exactly.

Conventions shared by every corruption:
- input RGB uint8 (H, W, 3); output RGB uint8 of the same shape;
- float results are clipped to [0, 255] and truncated to uint8, as ImageNet-C does (`np.uint8`);
- randomness comes only from the `rng` argument (a `numpy.random.Generator`), drawn in the same
  order and from the same distributions as the reference.

Parameters are tuples named in `Corruption.param_names`. Each corruption carries ImageNet-C's five
constants; `Corruption.params_at(s)` interpolates them linearly for a fractional severity s in
[1, 5] (integer-valued parameters are rounded), which is how the PSNR-ranked scheme builds its
candidate grid (see `severity.py`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numba
import numpy as np
from PIL import Image
from scipy.ndimage import zoom as scipy_zoom

from miqd.io import InputError

CorruptionFn = Callable[[np.ndarray, tuple, np.random.Generator], np.ndarray]

SEVERITY_RANGE = (1.0, 5.0)


@dataclass(frozen=True)
class Corruption:
    name: str
    category: str  # digital | blur | environment | noise (paper Table 2)
    fn: CorruptionFn
    param_names: tuple[str, ...]
    imagenet_c: tuple[tuple[float, ...], ...]  # severity 1..5
    integer_params: frozenset[str]
    stochastic: bool

    def params_at(self, severity: float) -> tuple:
        """Parameters at severity s in [1, 5]: ImageNet-C's constants, linearly interpolated."""
        lo_s, hi_s = SEVERITY_RANGE
        if not lo_s <= severity <= hi_s:
            raise InputError(
                f"severity {severity} of corruption {self.name!r} is out of range {lo_s:g}..{hi_s:g}"
            )
        lo = int(math.floor(severity))
        frac = severity - lo
        if frac == 0:
            raw = self.imagenet_c[lo - 1]
        else:
            a, b = self.imagenet_c[lo - 1], self.imagenet_c[lo]
            raw = tuple(ai + frac * (bi - ai) for ai, bi in zip(a, b))
        return tuple(
            int(math.floor(v + 0.5)) if name in self.integer_params else float(v)
            for name, v in zip(self.param_names, raw)
        )

    def describe(self, params: tuple) -> str:
        return ",".join(f"{n}={v:g}" for n, v in zip(self.param_names, params))

    def __call__(self, image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
        return self.apply(image, self.params_at(severity), rng)

    def apply(self, image: np.ndarray, params: tuple, rng: np.random.Generator) -> np.ndarray:
        out = self.fn(image, params, rng)
        if out.dtype != np.uint8:
            out = to_uint8(out)
        return out


_REGISTRY: dict[str, Corruption] = {}


def register(
    name: str,
    *,
    category: str,
    params: Sequence[str],
    imagenet_c: Sequence[Sequence[float] | float],
    integer: Sequence[str] = (),
    stochastic: bool = False,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Add a corruption to the registry; adding one is adding a decorated function."""

    def deco(fn: CorruptionFn) -> CorruptionFn:
        levels = tuple(tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in imagenet_c)
        if len(levels) != 5 or any(len(v) != len(params) for v in levels):
            raise ValueError(f"corruption {name}: need 5 levels of {len(params)} parameters")
        _REGISTRY[name] = Corruption(
            name, category, fn, tuple(params), levels, frozenset(integer), stochastic
        )
        return fn

    return deco


def get_corruption(name: str) -> Corruption:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown corruption {name!r}; available: {', '.join(available_corruptions())}"
        ) from None


def available_corruptions() -> list[str]:
    """Names in the paper's order (Table 2)."""
    return list(_REGISTRY)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and truncate, as ImageNet-C's `np.uint8(...)` does."""
    return np.clip(x, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# shared helpers (same maths as imagecorruptions' helpers, implemented for speed)


def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian on float images: truncate 4.0, 'nearest' borders, per channel."""
    radius = int(4.0 * sigma + 0.5)
    k = 2 * radius + 1
    return cv2.GaussianBlur(x, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        grid = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def motion_shifts(radius: int, sigma: float, angle: float, shape: tuple[int, int]):
    """(dx, dy, weight) of the line kernel of imagecorruptions' `_motion_blur`."""
    width = radius * 2 + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / np.sum(k)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    shifts = []
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= shape[0] or abs(dx) >= shape[1]:
            break  # the motion left the image
        shifts.append((dx, dy, k[i]))
    return shifts


def motion_blur_array(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Weighted sum of edge-replicated shifts: one padded copy instead of a roll per tap."""
    h, w = x.shape[:2]
    shifts = motion_shifts(radius, sigma, angle, (h, w))
    pad = max([max(abs(dx), abs(dy)) for dx, dy, _ in shifts] + [0])
    pad_width = ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2)
    xp = np.pad(x, pad_width, mode="edge")
    out = np.zeros(x.shape, dtype=np.float64)
    for dx, dy, weight in shifts:
        out += weight * xp[pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return out


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map in [0, 1] (square, side `mapsize`, a power of two)."""
    if mapsize & (mapsize - 1):
        raise ValueError("mapsize must be a power of two")
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)

        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

        stepsize //= 2
        wibble /= wibbledecay

    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    ch0 = int(np.ceil(img.shape[0] / float(zoom_factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom_factor)))
    top1 = (img.shape[1] - ch1) // 2
    return scipy_zoom(img[top0 : top0 + ch0, top1 : top1 + ch1], (zoom_factor, zoom_factor, 1), order=1)


@numba.njit(cache=True, nogil=True)
def _glass_shuffle(x: np.ndarray, offsets: np.ndarray, delta: int) -> None:  # pragma: no cover
    """ImageNet-C's local pixel shuffle, in its exact order and semantics.

    The reference writes `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy pixel views; the
    right-hand side aliases the array, so the "swap" copies x[h', w'] into x[h, w] and leaves
    x[h', w'] unchanged. ImageNet-C and MIQD-2.5M images were made that way; so are ours.
    """
    height, width, channels = x.shape
    for it in range(offsets.shape[0]):
        for a in range(offsets.shape[1]):
            h = height - delta - a
            for b in range(offsets.shape[2]):
                w = width - delta - b
                hp = h + offsets[it, a, b, 1]
                wp = w + offsets[it, a, b, 0]
                for c in range(channels):
                    x[h, w, c] = x[hp, wp, c]


# ---------------------------------------------------------------------------------------------
# the corruptions, in the paper's order (Table 2)


@register("contrast", category="digital", params=("factor",), imagenet_c=(0.4, 0.3, 0.2, 0.1, 0.05))
def contrast(x, p, rng):
    (c,) = p
    xf = x / 255.0
    means = np.mean(xf, axis=(0, 1), keepdims=True)
    return np.clip((xf - means) * c + means, 0, 1) * 255


@register("pixelate", category="digital", params=("scale",), imagenet_c=(0.6, 0.5, 0.4, 0.3, 0.25))
def pixelate(x, p, rng):
    (c,) = p
    h, w = x.shape[:2]
    im = Image.fromarray(x)
    im = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.NEAREST)
    return np.asarray(im)


@register(
    "jpeg_compression",
    category="digital",
    params=("quality",),
    imagenet_c=(25, 18, 15, 10, 7),
    integer=("quality",),
)
def jpeg_compression(x, p, rng):
    (quality,) = p
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


@register(
    "motion_blur",
    category="blur",
    params=("radius", "sigma"),
    imagenet_c=((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    integer=("radius",),
    stochastic=True,
)
def motion_blur(x, p, rng):
    radius, sigma = p
    angle = rng.uniform(-45, 45)
    return np.clip(motion_blur_array(x, int(radius), sigma, angle), 0, 255)


@register(
    "defocus_blur",
    category="blur",
    params=("radius", "alias_blur"),
    imagenet_c=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    integer=("radius",),
)
def defocus_blur(x, p, rng):
    radius, alias_blur = p
    kernel = disk_kernel(int(radius), alias_blur)
    xf = x / 255.0
    channels = np.stack([cv2.filter2D(xf[:, :, d], -1, kernel) for d in range(3)], axis=2)
    return np.clip(channels, 0, 1) * 255


@register(
    "glass_blur",
    category="blur",
    params=("sigma", "max_delta", "iterations"),
    imagenet_c=((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    integer=("max_delta", "iterations"),
    stochastic=True,
)
def glass_blur(x, p, rng):
    sigma, delta, iterations = p
    delta, iterations = int(delta), int(iterations)
    y = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    nh, nw = max(y.shape[0] - 2 * delta, 0), max(y.shape[1] - 2 * delta, 0)
    offsets = rng.integers(-delta, delta, size=(iterations, nh, nw, 2))
    _glass_shuffle(y, offsets, delta)
    return np.clip(gaussian_filter(y / 255.0, sigma), 0, 1) * 255


@register(
    "fog",
    category="environment",
    params=("scale", "decay"),
    imagenet_c=((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    stochastic=True,
)
def fog(x, p, rng):
    scale, decay = p
    h, w = x.shape[:2]
    map_size = 1 << (max(h, w, x.shape[2]) - 1).bit_length()
    xf = x / 255.0
    max_val = xf.max()
    xf = xf + scale * plasma_fractal(map_size, decay, rng)[:h, :w][..., None]
    return np.clip(xf * max_val / (max_val + scale), 0, 1) * 255


@register(
    "snow",
    category="environment",
    params=("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
    imagenet_c=(
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    integer=("radius",),
    stochastic=True,
)
def snow(x, p, rng):
    loc, scale, zoom, threshold, radius, sigma, blend = p
    h, w = x.shape[:2]
    xf = x.astype(np.float32) / 255.0
    layer = rng.normal(size=(h, w), loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = motion_blur_array(layer, int(radius), sigma, rng.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[..., None][:h, :w, :]
    gray = cv2.cvtColor(xf, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    xf = blend * xf + (1 - blend) * np.maximum(xf, gray * 1.5 + 0.5)
    flakes = layer + np.rot90(layer, k=2)
    if flakes.shape[:2] == (h, w):
        return np.clip(xf + flakes, 0, 1) * 255
    # the zoomed layer came out a pixel short: the reference adds it to the top-left corner
    lh, lw = layer.shape[:2]
    xf[:lh, :lw] += flakes
    return np.clip(xf, 0, 1) * 255


@register(
    "darkness",
    category="environment",
    params=("value_drop",),
    imagenet_c=(0.1, 0.2, 0.3, 0.4, 0.5),
)
def darkness(x, p, rng):
    """HSV value minus `value_drop` (V in [0, 1]); ImageNet-C `brightness` run backwards.

    With hue and saturation fixed, RGB is proportional to V, so scaling every channel by
    (V - c) / V is exactly the HSV round trip without leaving RGB.
    """
    (c,) = p
    xf = x / 255.0
    v = xf.max(axis=2, keepdims=True)
    scale = np.divide(np.clip(v - c, 0, 1), v, out=np.zeros_like(v), where=v > 0)
    return xf * scale * 255


@register(
    "gaussian_noise",
    category="noise",
    params=("sigma",),
    imagenet_c=(0.08, 0.12, 0.18, 0.26, 0.38),
    stochastic=True,
)
def gaussian_noise(x, p, rng):
    (c,) = p
    xf = x / 255.0
    return np.clip(xf + rng.normal(size=xf.shape, scale=c), 0, 1) * 255
