"""Severity schemes: which five whole-image distortions of a source become levels 1..5.

- `imagenet_c`: ImageNet-C's fixed constants, severities 1..5; five corruption calls.
- `psnr_ranked` (MIQD-2.5M's calibration, DESIGN.md §3.3): corrupt the source at every candidate
  severity, rank the candidates by PSNR to the original (highest first = mildest), keep the
  candidates at the configured ranks (default 1, 5, 8, 10, 12 of 12) as levels 1..5. Levels are
  therefore ordered by PSNR for every image, also for stochastic corruptions.

  The paper does not publish its 12 candidate values. Our default grid interpolates ImageNet-C's
  constants at severities 1, 1.25, 1.5, 1.75, 2, 2.33, 2.67, 3, 3.5, 4, 4.5, 5, so that ranks
  1, 5, 8, 10, 12 land on ImageNet-C's five levels whenever PSNR falls monotonically with
  severity; both the grid and the ranks are config keys.

A corruption at severity s for image i always uses the random stream (seed, i, corruption, s),
so a candidate at s = 2 is the same image as ImageNet-C's level 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from miqd.distort.corruptions import Corruption
from miqd.io import InputError
from miqd.quality import psnr
from miqd.seeding import rng_for

DEFAULT_CANDIDATES = (1.0, 1.25, 1.5, 1.75, 2.0, 2.33, 2.67, 3.0, 3.5, 4.0, 4.5, 5.0)
DEFAULT_RANKS = (1, 5, 8, 10, 12)
SCHEMES = ("imagenet_c", "psnr_ranked")


@dataclass(frozen=True)
class SeverityScheme:
    name: str = "psnr_ranked"
    candidates: tuple[float, ...] = DEFAULT_CANDIDATES
    ranks: tuple[int, ...] = DEFAULT_RANKS

    def __post_init__(self):
        if self.name not in SCHEMES:
            raise InputError(
                f"distort.severity_scheme {self.name!r} is unknown; allowed: {', '.join(SCHEMES)}"
            )
        if self.name == "psnr_ranked":
            n = len(self.candidates)
            for s in self.candidates:
                if not 1 <= s <= 5:
                    raise InputError(
                        f"distort.psnr_ranked.candidate_severities: {s} is out of range 1..5"
                    )
            if len(self.ranks) != 5 or any(not 1 <= r <= n for r in self.ranks):
                raise InputError(
                    f"distort.psnr_ranked.ranks {list(self.ranks)}: need 5 ranks in 1..{n} "
                    f"(the number of candidate_severities)"
                )
            if list(self.ranks) != sorted(set(self.ranks)):
                raise InputError(
                    f"distort.psnr_ranked.ranks {list(self.ranks)} must be strictly increasing"
                )

    @property
    def severities(self) -> tuple[float, ...]:
        """The severities that are corrupted (one call each)."""
        return (1.0, 2.0, 3.0, 4.0, 5.0) if self.name == "imagenet_c" else self.candidates


@dataclass
class Level:
    """One kept whole-image distortion."""

    level: int
    severity: float
    params: tuple
    image: np.ndarray
    psnr: float


@dataclass
class Calibration:
    levels: list[Level]
    rows: list[dict] = field(default_factory=list)  # every candidate, kept or not


def compute_levels(
    corruption: Corruption, image: np.ndarray, image_id: str, scheme: SeverityScheme, seed: int
) -> Calibration:
    candidates = []
    for severity in scheme.severities:
        params = corruption.params_at(severity)
        out = corruption.apply(image, params, rng_for(seed, image_id, corruption.name, severity))
        candidates.append((severity, params, out, psnr(image, out)))

    if scheme.name == "imagenet_c":
        kept = list(range(5))
        rank_of = list(range(1, 6))
    else:
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][3], i))
        rank_of = [0] * len(candidates)
        for rank, i in enumerate(order, start=1):
            rank_of[i] = rank
        kept = [order[r - 1] for r in scheme.ranks]

    level_of = {i: lvl for lvl, i in enumerate(kept, start=1)}
    levels = [Level(level_of[i], *candidates[i]) for i in kept]
    rows = [
        {
            "image_id": image_id,
            "corruption": corruption.name,
            "candidate": i,
            "severity": float(sev),
            "params": corruption.describe(params),
            "psnr": float(p),
            "rank": rank_of[i],
            "level": level_of.get(i),
        }
        for i, (sev, params, _, p) in enumerate(candidates)
    ]
    return Calibration(levels, rows)
