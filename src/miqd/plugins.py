"""One registry for every pluggable kind: corruptions, NR-IQA metrics, model backends, key maps,
quality models, losses, selection methods.

Why one: each kind is looked up by a name that comes from a config or a registry file, so each
needs the same two answers: what an unknown name says (the names that exist, so the user can fix
the typo) and what a name registered twice does (an error at import time, never a silent
replacement: two plugins claiming one name is a bug, and the later one would win unseen).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from miqd.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to things of one `kind`, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str, where: str = "") -> T:
        """The item named `name`; an InputError listing the known names otherwise. `where`
        (a config key, a model id) goes in front of the message."""
        if name not in self._items:
            prefix = f"{where}: " if where else ""
            raise InputError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
