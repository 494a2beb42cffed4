"""Counts in messages and pages, written as a person would write them (a leaf: no imports)."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """"1 image", "2 images", "1 class", "3 classes": counts read as a person would write them."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith(("s", "x", "ch", "sh")) else f"{n} {word}s"
