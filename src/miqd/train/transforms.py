"""The paper's preprocessing (§6.2), on uint8 arrays so that workers ship bytes, not floats.

Short side resized to `resize` (288), then a `crop` (224) square: random in training, centred in
evaluation; training flips the image horizontally and vertically with probability 0.5 each. The
region encoder sees the centred `region` (288) square of the same resized (and flipped) image.

Resizing and centre cropping are torchvision's `Resize(288)` and `CenterCrop` on a PIL image, as
MIQA's training and inference code applies them (Pillow's antialiased bilinear filter, the long
side int(288 * long / short), the crop offset round((side - crop) / 2)), so a model trained by MIQA
sees here exactly the pixels it saw there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def resize_short(image: np.ndarray, short: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= h:
        size = (short, int(short * h / w))  # PIL: (width, height)
    else:
        size = (int(short * w / h), short)
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {w}x{h}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]


@dataclass(frozen=True)
class Preprocess:
    resize: int = 288
    crop: int = 224
    region: int | None = 288
    train: bool = False
    hflip: float = 0.5
    vflip: float = 0.5

    def __post_init__(self):
        if self.crop > self.resize or (self.region is not None and self.region > self.resize):
            raise ValueError(f"crop {self.crop} and region {self.region} must not exceed resize {self.resize}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None):
        """(crop CHW uint8, region CHW uint8 or None)."""
        img = resize_short(image, self.resize)
        if self.train:
            if rng is None:
                raise ValueError("training preprocessing needs a random generator")
            u = rng.random(4)
            if u[0] < self.hflip:
                img = img[:, ::-1]
            if u[1] < self.vflip:
                img = img[::-1]
            h, w = img.shape[:2]
            top = int(u[2] * (h - self.crop + 1))
            left = int(u[3] * (w - self.crop + 1))
            crop = img[top:top + self.crop, left:left + self.crop]
        else:
            crop = centre_crop(img, self.crop)
        region = None if self.region is None else centre_crop(img, self.region)
        chw = lambda a: np.ascontiguousarray(a.transpose(2, 0, 1))  # noqa: E731
        return chw(crop), (None if region is None else chw(region))
