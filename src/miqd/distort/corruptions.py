"""The ten MIQD-2.5M corruptions, as a registry of pure functions of (image, parameters, rng).

Every corruption has the definition the MIQD-2.5M generator applied (variant `miqd25m`, the
default). Where ImageNet-C's released code (`imagecorruptions` 1.1.2) computes it differently, that
definition is registered too (variant `imagenet_c`): glass blur (a sequential pixel-by-pixel
shuffle there, one vectorised pass per iteration in the generator), motion blur (a shift-and-add
line kernel there, ImageMagick's MotionBlurImage in the generator) and snow (a float32 blend there,
float64 in the generator). The tests check each variant against its source image for image.

Conventions shared by every corruption:
- input RGB uint8 (H, W, 3); output RGB uint8 of the same shape;
- float results are clipped to [0, 255] and truncated to uint8, as both sources do (`np.uint8`);
- randomness comes only from the `rng` argument (anything with numpy's `normal`, `uniform` and
  `integers`), drawn in the same order and from the same distributions as the source, so that the
  source's own stream, injected, gives the source's image;
- parameters arrive as the candidate table writes them (`schemes.yaml`); a function truncates one to
  an integer exactly where its source does.

A corruption whose candidates share work on one image (darkness: the HSV split) registers a
`prepare` step; `Corruption.bind(image)` runs it once for all of that image's candidates.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numba
import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.ndimage import zoom as scipy_zoom

from miqd.errors import InputError
from miqd.plugins import Registry

MIQD25M = "miqd25m"
IMAGENET_C = "imagenet_c"
VARIANTS = (MIQD25M, IMAGENET_C)

CorruptionFn = Callable[..., np.ndarray]  # fn(image_or_prepared, params, rng)
Bound = Callable[[tuple, object], np.ndarray]  # (params, rng) -> uint8 image


@dataclass(frozen=True)
class Implementation:
    fn: CorruptionFn
    prepare: Callable[[np.ndarray], object] | None = None


@dataclass(frozen=True)
class Corruption:
    name: str
    category: str  # digital | blur | environment | noise (paper Table 2)
    param_names: tuple[str, ...]
    stochastic: bool
    implementations: dict[str, Implementation] = field(default_factory=dict)

    def implementation(self, variant: str = MIQD25M) -> Implementation:
        """The variant's own definition, or the generator's where ImageNet-C's is the same."""
        if variant not in VARIANTS:
            raise InputError(f"unknown corruption variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        return self.implementations.get(variant) or self.implementations[MIQD25M]

    def bind(self, image: np.ndarray, variant: str = MIQD25M) -> Bound:
        """`(params, rng) -> image` for one source, its shared preparation done once."""
        impl = self.implementation(variant)
        state = impl.prepare(image) if impl.prepare else image

        def apply(params: tuple, rng) -> np.ndarray:
            out = impl.fn(state, tuple(params), rng)
            return out if out.dtype == np.uint8 else to_uint8(out)

        return apply

    def apply(self, image: np.ndarray, params: Sequence[float], rng, variant: str = MIQD25M) -> np.ndarray:
        return self.bind(image, variant)(tuple(params), rng)

    def describe(self, params: Sequence[float]) -> str:
        return ",".join(f"{n}={v:g}" for n, v in zip(self.param_names, params, strict=True))


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def register(
    name: str,
    *,
    category: str,
    params: Sequence[str],
    stochastic: bool = False,
    variant: str = MIQD25M,
    prepare: Callable[[np.ndarray], object] | None = None,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Add a corruption (or another variant of one) to the registry: a decorated function."""

    def deco(fn: CorruptionFn) -> CorruptionFn:
        entry = CORRUPTIONS.get(name) if name in CORRUPTIONS else CORRUPTIONS.add(
            name, Corruption(name, category, tuple(params), stochastic))
        if (entry.category, entry.param_names, entry.stochastic) != (category, tuple(params), stochastic):
            raise ValueError(f"corruption {name}: variant {variant} disagrees on category/params")
        if variant in entry.implementations:
            raise ValueError(f"corruption {name}: variant {variant} registered twice")
        entry.implementations[variant] = Implementation(fn, prepare)
        return fn

    return deco


def get_corruption(name: str) -> Corruption:
    return CORRUPTIONS.get(name)


def available_corruptions() -> list[str]:
    """Names in the paper's order (Table 2)."""
    return CORRUPTIONS.names()


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and truncate, as both sources' `np.uint8(...)` does."""
    return np.clip(x, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# shared helpers (the sources' maths, implemented for speed where that keeps every bit)


def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """`skimage.filters.gaussian(x, sigma, channel_axis=-1)` on a float image, bit for bit."""
    return ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest", truncate=4.0)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel; a fractional radius is compared as is (the generator's 0.95 .. 0.999)."""
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


def line_shifts(radius: float, sigma: float, angle: float, shape: tuple[int, int]):
    """(dx, dy, weight) of the line kernel of ImageNet-C's `_motion_blur` (snow's streaks).

    A fractional radius keeps that code's quirk: the kernel has ceil(2r + 1) taps and is
    normalised over all of them, but only the first int(2r + 1) are applied.
    """
    width = radius * 2 + 1
    taps = np.arange(width)
    k = np.exp(-(taps**2) / (2 * (sigma**2))) / (np.sqrt(2 * np.pi) * sigma)
    k = k / np.sum(k)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    shifts = []
    for i in range(int(width)):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= shape[0] or abs(dx) >= shape[1]:
            break  # the motion left the image
        shifts.append((dx, dy, k[i]))
    return shifts


def line_blur(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Weighted sum of edge-replicated shifts: one padded copy instead of a roll per tap."""
    h, w = x.shape[:2]
    shifts = line_shifts(radius, sigma, angle, (h, w))
    pad = max([max(abs(dx), abs(dy)) for dx, dy, _ in shifts] + [0])
    pad_width = ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2)
    xp = np.pad(x, pad_width, mode="edge")
    out = np.zeros(x.shape, dtype=np.float64)
    for dx, dy, weight in shifts:
        out += weight * xp[pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return out


_MAGICK_EPSILON = 1.0e-12


def magick_motion_taps(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's MotionBlurImage kernel: (x offsets, y offsets, weights), in its tap order."""
    if radius <= _MAGICK_EPSILON:
        raise ValueError("motion blur radius must be positive (ImageMagick would pick one itself)")
    width = int(2.0 * math.ceil(radius) + 1.0)  # GetOptimalKernelWidth1D for radius > 0
    s = sigma if abs(sigma) >= _MAGICK_EPSILON else _MAGICK_EPSILON
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i * i) / (2.0 * s * s)) / (math.sqrt(2.0 * math.pi) * s)
    k = k / k.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hypot = math.hypot(px, py)
    ox = np.array([math.ceil(j * py / hypot - 0.5) for j in range(width)], dtype=np.int64)
    oy = np.array([math.ceil(j * px / hypot - 0.5) for j in range(width)], dtype=np.int64)
    return ox, oy, k


@numba.njit(cache=True, nogil=True)
def _magick_line_sum(xp, pad, ox, oy, k, out):  # pragma: no cover - compiled
    """out[y, x] = sum_i k[i] * 257 * xp[y + oy[i], x + ox[i]], taps added in ImageMagick's order."""
    h, w, ch = out.shape
    for i in range(k.shape[0]):
        r0 = pad + oy[i]
        c0 = pad + ox[i]
        ki = k[i]
        for r in range(h):
            for c in range(w):
                for d in range(ch):
                    out[r, c, d] += ki * (257.0 * xp[r0 + r, c0 + c, d])


def magick_motion_blur(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick 6 (Q16) MotionBlurImage of an 8-bit image, written back as 8 bits.

    Pixels are 16-bit quanta (8-bit value x 257), taps are summed in double in kernel order with
    edge pixels replicated past the border, the sum is rounded to a quantum and the quantum
    truncated to 8 bits (q // 257), which is what reading Wand's PNG blob back gives.
    """
    ox, oy, k = magick_motion_taps(radius, sigma, angle)
    h, w = x.shape[:2]
    pad = int(max(np.abs(ox).max(), np.abs(oy).max()))
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros(x.shape, dtype=np.float64)
    _magick_line_sum(xp, pad, ox, oy, k, acc)
    quanta = np.clip(np.floor(acc + 0.5), 0, 65535)
    return (quanta // 257).astype(np.uint8)


def plasma_fractal(mapsize: int, wibbledecay: float, rng) -> np.ndarray:
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

        # the sums are associated as the sources write them: (a + b) + (c + d)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
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
    x[h', w'] unchanged.
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


def _hsv_factors(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's RGB -> HSV -> RGB round trip, split into V and what multiplies it.

    hsv2rgb returns, per channel, V times one of 1, (1 - S), (1 - F S), (1 - (1 - F) S), chosen by
    the hue sector; none of those factors depends on V. Computing them once per image with
    scikit-image's own expressions and multiplying by a changed V gives its bits exactly.
    """
    arr = x / 255.0
    v = arr.max(-1)
    delta = np.ptp(arr, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        s[delta == 0.0] = 0.0
        h = np.empty_like(v)
        idx = arr[..., 0] == v
        h[idx] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
        idx = arr[..., 1] == v
        h[idx] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
        idx = arr[..., 2] == v
        h[idx] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
        h = (h / 6.0) % 1.0
        h[delta == 0.0] = 0.0
    h[np.isnan(h)] = 0
    s[np.isnan(s)] = 0
    hi = np.floor(h * 6)
    f = h * 6 - hi
    one = np.ones_like(v)
    p, q, t = 1 - s, 1 - f * s, 1 - (1 - f) * s
    sector = hi.astype(np.uint8) % 6
    table = np.stack([
        np.stack((one, t, p), axis=-1), np.stack((q, one, p), axis=-1), np.stack((p, one, t), axis=-1),
        np.stack((p, q, one), axis=-1), np.stack((t, p, one), axis=-1), np.stack((one, p, q), axis=-1),
    ])
    factors = np.choose(np.repeat(sector[..., None], 3, axis=-1), table)
    return v, factors


# ---------------------------------------------------------------------------------------------
# the corruptions, in the paper's order (Table 2)


@register("contrast", category="digital", params=("factor",))
def contrast(x, p, rng):
    (c,) = p
    xf = x / 255.0
    means = np.mean(xf, axis=(0, 1), keepdims=True)
    return np.clip((xf - means) * c + means, 0, 1) * 255


@register("pixelate", category="digital", params=("scale",))
def pixelate(x, p, rng):
    (c,) = p
    h, w = x.shape[:2]
    im = Image.fromarray(x)
    im = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.NEAREST)
    return np.asarray(im)


@register("jpeg_compression", category="digital", params=("quality",))
def jpeg_compression(x, p, rng):
    (quality,) = p
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


@register("motion_blur", category="blur", params=("radius", "sigma"), stochastic=True)
def motion_blur(x, p, rng):
    """ImageMagick's motion blur (the generator calls it through Wand), angle in [-45, 45]."""
    radius, sigma = p
    return magick_motion_blur(x, radius, sigma, rng.uniform(-45, 45))


@register("motion_blur", category="blur", params=("radius", "sigma"), stochastic=True, variant=IMAGENET_C)
def motion_blur_imagenet_c(x, p, rng):
    radius, sigma = p
    angle = rng.uniform(-45, 45)
    return np.clip(line_blur(x, int(radius), sigma, angle), 0, 255)


@register("defocus_blur", category="blur", params=("radius", "alias_blur"))
def defocus_blur(x, p, rng):
    radius, alias_blur = p
    kernel = disk_kernel(radius, alias_blur)
    xf = x / 255.0
    channels = np.stack([cv2.filter2D(xf[:, :, d], -1, kernel) for d in range(3)], axis=2)
    return np.clip(channels, 0, 1) * 255


@register("glass_blur", category="blur", params=("sigma", "max_delta", "iterations"), stochastic=True)
def glass_blur(x, p, rng):
    """The generator's glass blur: every pixel takes a random neighbour's value at once, per pass."""
    sigma, delta, iterations = p
    delta, iterations = int(delta), int(iterations)
    y = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    h, w = y.shape[:2]
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    for _ in range(iterations):
        dh, dw = rng.integers(-delta, delta, size=(2, h, w))
        y = y[np.clip(rows + dh, 0, h - 1), np.clip(cols + dw, 0, w - 1)]
    return np.clip(gaussian_filter(y / 255.0, sigma), 0, 1) * 255


@register("glass_blur", category="blur", params=("sigma", "max_delta", "iterations"), stochastic=True,
          variant=IMAGENET_C)
def glass_blur_imagenet_c(x, p, rng):
    sigma, delta, iterations = p
    delta, iterations = int(delta), int(iterations)
    y = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    nh, nw = max(y.shape[0] - 2 * delta, 0), max(y.shape[1] - 2 * delta, 0)
    offsets = rng.integers(-delta, delta, size=(iterations, nh, nw, 2))
    _glass_shuffle(y, offsets, delta)
    return np.clip(gaussian_filter(y / 255.0, sigma), 0, 1) * 255


@register("fog", category="environment", params=("scale", "decay"), stochastic=True)
def fog(x, p, rng):
    scale, decay = p
    h, w = x.shape[:2]
    map_size = 1 << (max(h, w, x.shape[2]) - 1).bit_length()
    xf = x / 255.0
    max_val = xf.max()
    xf = xf + scale * plasma_fractal(map_size, decay, rng)[:h, :w][..., None]
    return np.clip(xf * max_val / (max_val + scale), 0, 1) * 255


SNOW_PARAMS = ("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend")


def _snow(x, p, rng, blend_dtype):
    """The blend of image and its brightened grey is float32 in ImageNet-C and float64 in the
    generator (its blend weight is a NumPy float64, which NumPy >= 2 lets promote the image)."""
    loc, scale, zoom, threshold, radius, sigma, blend = p
    blend = blend_dtype(blend)
    h, w = x.shape[:2]
    xf = x.astype(np.float32) / 255.0
    layer = rng.normal(size=(h, w), loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = line_blur(layer, radius, sigma, rng.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[..., None][:h, :w, :]
    gray = cv2.cvtColor(xf, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    xf = blend * xf + (1 - blend) * np.maximum(xf, gray * 1.5 + 0.5)
    flakes = layer + np.rot90(layer, k=2)
    if flakes.shape[:2] == (h, w):
        return np.clip(xf + flakes, 0, 1) * 255
    # the zoomed layer came out a pixel short: the sources add it to the top-left corner
    lh, lw = layer.shape[:2]
    xf[:lh, :lw] += flakes
    return np.clip(xf, 0, 1) * 255


register("snow", category="environment", params=SNOW_PARAMS, stochastic=True)(
    functools.partial(_snow, blend_dtype=np.float64))
register("snow", category="environment", params=SNOW_PARAMS, stochastic=True, variant=IMAGENET_C)(
    functools.partial(_snow, blend_dtype=float))


@register("darkness", category="environment", params=("value_drop",), prepare=_hsv_factors)
def darkness(prepared, p, rng):
    """HSV value minus `value_drop` (V in [0, 1]), through scikit-image's colour conversion."""
    (c,) = p
    v, factors = prepared
    return np.clip(np.clip(v - c, 0, 1)[..., None] * factors, 0, 1) * 255


@register("gaussian_noise", category="noise", params=("sigma",), stochastic=True)
def gaussian_noise(x, p, rng):
    (c,) = p
    xf = x / 255.0
    return np.clip(xf + rng.normal(size=xf.shape, scale=c), 0, 1) * 255
