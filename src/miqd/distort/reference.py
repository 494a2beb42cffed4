"""The independent reference for the corruptions: `imagecorruptions` 1.1.2 (ImageNet-C's code).

Used by the tests and `benchmarks/distort.py`; needs the `test` extra. The PyPI release predates
scikit-image's `channel_axis` and NumPy 2, so `compat()` patches exactly two names while a call
runs: its `gaussian` (passes `multichannel=True` on as `channel_axis=-1`) and `np.float_`
(an alias of `np.float64`). Nothing else of the package is touched.

`LegacyRandom` lets our corruptions draw from the same legacy `np.random` stream the reference
uses after `np.random.seed(s)`, so the two can be compared image for image.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np


def _gaussian_compat(image, sigma=1, multichannel=None, **kwargs):
    from skimage.filters import gaussian

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return gaussian(image, sigma=sigma, **kwargs)


@contextlib.contextmanager
def compat() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from imagecorruptions import corruptions as icc
    saved_gaussian = icc.gaussian
    had_float_ = "float_" in np.__dict__
    icc.gaussian = _gaussian_compat
    if not had_float_:
        np.float_ = np.float64
    try:
        yield
    finally:
        icc.gaussian = saved_gaussian
        if not had_float_:
            del np.float_


def reference_corrupt(image: np.ndarray, severity: int, name: str, seed: int | None = None) -> np.ndarray:
    """`imagecorruptions.corrupt` at an ImageNet-C severity; `seed` seeds the global np.random."""
    import imagecorruptions

    with compat():
        if seed is not None:
            np.random.seed(seed)
        return imagecorruptions.corrupt(image, severity=severity, corruption_name=name)


class LegacyRandom:
    """The `numpy.random.Generator` methods our corruptions call, drawn from a RandomState."""

    def __init__(self, seed: int):
        self._rs = np.random.RandomState(seed)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._rs.normal(loc, scale, size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._rs.uniform(low, high, size)

    def integers(self, low, high=None, size=None):
        return self._rs.randint(low, high, size=size)
