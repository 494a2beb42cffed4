"""Random streams keyed by what they are for, never by position in a list or a shard.

A stream depends only on (global seed, image id, corruption, severity), so an image comes out the
same whichever shard, worker or order it is processed in.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_key(seed: int, *keys: object) -> int:
    """A 128-bit integer that identifies (seed, *keys); stable across Python runs and platforms."""
    h = hashlib.blake2b(digest_size=16)
    for key in (seed, *keys):
        h.update(repr(key).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little")


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(stream_key(seed, *keys))))
