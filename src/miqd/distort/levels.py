"""Severity schemes: which whole-image distortions of a source become levels 1..5.

- `miqd25m` (the default): MIQD-2.5M's recipe. Each corruption has the generator's 12 candidate
  parameters; the source is corrupted at every candidate, the candidates are ranked by PSNR to
  the original (highest first = mildest; equal PSNRs keep candidate order, as the generator's
  stable sort does), and the candidates at ranks 1, 5, 8, 10, 12 become levels 1..5. Levels are
  therefore ordered by PSNR for every image, also for stochastic corruptions. A source with a side
  below 161 px is ranked on upscaled copies, as the generator's step 2 ranks it.
- `imagenet_c`: ImageNet-C's five fixed constants, applied with ImageNet-C's own functions; the
  five candidates are the five levels, in order, and nothing is ranked.

The candidates live in `schemes.yaml` (with their sources); this module only reads them. A
candidate is named by its number in that table (1-based); its random stream is keyed by
(seed, image id, corruption, candidate number), so an image comes out the same whichever shard,
worker or order it is processed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np
import yaml
from PIL import Image

from miqd.distort.corruptions import Corruption, get_corruption
from miqd.errors import InputError
from miqd.fidelity import psnr
from miqd.seeding import rng_for

DEFAULT_RANKS = (1, 5, 8, 10, 12)
Streams = Callable[[str, int], object]  # (corruption, candidate number) -> rng


def _expand(rule: dict, n: int) -> list[tuple[float, ...]]:
    """A corruption's candidates from its table entry, computed exactly as its source computes them."""
    if "values" in rule:
        rows = [v if isinstance(v, list) else [v] for v in rule["values"]]
    elif "logspace" in rule:
        a, b = rule["logspace"]
        rows = [[v] for v in np.logspace(np.log10(a), np.log10(b), num=n)]
    elif "linspace" in rule:
        a, b = rule["linspace"]
        rows = [[v] for v in np.linspace(a, b, n)]
    elif "interpolate" in rule:
        lo = np.array(rule["interpolate"]["from"], dtype=np.float64)
        hi = np.array(rule["interpolate"]["to"], dtype=np.float64)
        rows = (lo + np.linspace(0, 1, n)[:, None] * (hi - lo)[None, :]).tolist()
    else:  # pragma: no cover - the table is ours
        raise ValueError(f"candidate rule without values: {rule}")
    return [tuple(float(v) for v in row) for row in rows]


@cache
def scheme_tables() -> dict[str, dict]:
    text = resources.files("miqd.distort").joinpath("schemes.yaml").read_text()
    tables = yaml.safe_load(text)
    for name, table in tables.items():
        n = table["candidates"]
        table["params"] = {}
        for corruption, rule in table["corruptions"].items():
            rows = _expand(rule, n)
            declared = tuple(rule["params"])
            if len(rows) != n or any(len(r) != len(declared) for r in rows):
                raise ValueError(f"schemes.yaml {name}.{corruption}: need {n} rows of {declared}")
            if declared != get_corruption(corruption).param_names:
                raise ValueError(f"schemes.yaml {name}.{corruption}: params {declared} are not the "
                                 f"registry's {get_corruption(corruption).param_names}")
            table["params"][corruption] = tuple(rows)
    return tables


SCHEMES = ("miqd25m", "imagenet_c")


@dataclass(frozen=True)
class SeverityScheme:
    name: str = "miqd25m"
    ranks: tuple[int, ...] = DEFAULT_RANKS
    rank_min_side: int = 161  # sources with a shorter side are ranked on upscaled copies (0: never)

    def __post_init__(self):
        if self.name not in scheme_tables():
            hint = (" (psnr_ranked, ImageNet-C's constants interpolated, was replaced by miqd25m, "
                    "the MIQD-2.5M generator's own candidates)") if self.name == "psnr_ranked" else ""
            raise InputError(f"distort.severity_scheme {self.name!r} is unknown; allowed: "
                             f"{', '.join(scheme_tables())}{hint}")
        if self.ranked:
            n = self.table["candidates"]
            if len(self.ranks) != 5 or any(not 1 <= r <= n for r in self.ranks):
                raise InputError(f"distort.ranks {list(self.ranks)}: need 5 ranks in 1..{n} "
                                 f"(the {self.name} scheme has {n} candidates per corruption)")
            if list(self.ranks) != sorted(set(self.ranks)):
                raise InputError(f"distort.ranks {list(self.ranks)} must be strictly increasing")

    @property
    def table(self) -> dict:
        return scheme_tables()[self.name]

    @property
    def ranked(self) -> bool:
        return bool(self.table["ranked"])

    @property
    def variant(self) -> str:
        """Which definition of each corruption the scheme applies."""
        return self.table["variant"]

    def candidates(self, corruption: str) -> tuple[tuple[float, ...], ...]:
        try:
            return self.table["params"][corruption]
        except KeyError:
            raise InputError(f"the {self.name} scheme has no candidates for corruption "
                             f"{corruption!r}; add them to miqd/distort/schemes.yaml") from None


@dataclass
class Level:
    """One kept whole-image distortion."""

    level: int
    candidate: int  # 1-based number in the scheme's table
    params: tuple
    image: np.ndarray
    psnr: float


@dataclass
class Calibration:
    levels: list[Level]
    rows: list[dict] = field(default_factory=list)  # every candidate, kept or not


def _ranking_upscale(shape: tuple[int, int], scheme: SeverityScheme) -> Callable | None:
    """The generator's step 2 scores images of a side below 161 px (MS-SSIM's minimum) on copies
    upscaled with Pillow's default filter to that shorter side (its --min-side 161), PSNR included,
    so their candidates are ranked on those copies; so are ours."""
    h, w = shape
    if not scheme.rank_min_side or min(h, w) >= scheme.rank_min_side:
        return None
    ratio = scheme.rank_min_side / min(h, w)
    size = (int(w * ratio), int(h * ratio))
    return lambda x: np.asarray(Image.fromarray(x).resize(size))


def keyed_streams(seed: int, image_id: str) -> Streams:
    return lambda corruption, candidate: rng_for(seed, image_id, corruption, candidate)


def compute_levels(corruption: Corruption, image: np.ndarray, image_id: str, scheme: SeverityScheme,
                   seed: int, streams: Streams | None = None) -> Calibration:
    """Corrupt at every candidate, rank (if the scheme ranks), keep five as levels 1..5.

    `streams` replaces the keyed random streams, e.g. by one shared legacy stream to reproduce a
    generator that draws everything from numpy's global state.
    """
    streams = streams or keyed_streams(seed, image_id)
    apply = corruption.bind(image, scheme.variant)
    upscale = _ranking_upscale(image.shape[:2], scheme) if scheme.ranked else None
    reference = upscale(image) if upscale else image
    candidates, rank_psnr = [], []
    for number, params in enumerate(scheme.candidates(corruption.name), start=1):
        out = apply(params, streams(corruption.name, number))
        candidates.append((number, params, out, psnr(image, out)))
        rank_psnr.append(psnr(reference, upscale(out)) if upscale else candidates[-1][3])

    if scheme.ranked:
        order = sorted(range(len(candidates)), key=lambda i: (-rank_psnr[i], i))
        kept = [order[r - 1] for r in scheme.ranks]
    else:
        order = list(range(len(candidates)))
        kept = order[:5]
    rank_of = {i: rank for rank, i in enumerate(order, start=1)}
    level_of = {i: lvl for lvl, i in enumerate(kept, start=1)}
    levels = [Level(level_of[i], *candidates[i]) for i in kept]
    rows = [
        {
            "image_id": image_id,
            "corruption": corruption.name,
            "candidate": number,
            "params": corruption.describe(params),
            "psnr": float(p),
            "rank_psnr": float(rank_psnr[i]),
            "rank": rank_of[i],
            "level": level_of.get(i),
        }
        for i, (number, params, _, p) in enumerate(candidates)
    ]
    return Calibration(levels, rows)
