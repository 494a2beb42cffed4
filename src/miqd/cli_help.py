"""How every `miqd` subcommand is declared, so each `--help` reads the same way.

One helper makes a subcommand with a one-line description, its defaults and choices shown and an
example. Building the parser imports nothing heavy: choices that need the image libraries (the
corruption names) are looked up only when `--help` or a value check needs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

Handler = Callable[[argparse.Namespace], None]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and example's lines, and appends `(default: …)` to every option
    whose help says neither its default nor when it is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or "required" in text or action.required or not action.option_strings
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: {_shown(action)})"


def _shown(action: argparse.Action) -> str:
    default: Any = action.default
    if isinstance(action, argparse._StoreTrueAction):
        return "on" if default else "off"
    if default is None or default == []:
        return "none"
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default))
    return str(default).replace("%", "%%")  # help strings are %-formatted


class LazyChoices:
    """Choices computed on first use (a `--help`, or checking a value), not at parser build time."""

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load

    @cached_property
    def names(self) -> list[str]:
        return list(self._load())

    def __contains__(self, value: object) -> bool:
        return value in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def corruption_names() -> list[str]:
    from miqd.distort.corruptions import available_corruptions

    return available_corruptions()


def scheme_names() -> list[str]:
    from miqd.distort.levels import scheme_tables

    return sorted(scheme_tables())


def command(sub: argparse._SubParsersAction, name: str, func: Handler, summary: str,
            example: str, details: str = "") -> argparse.ArgumentParser:
    """Add subcommand `name`: `summary` is its line in `miqd --help` and its description (with
    `details` after it), `example` one or more command lines shown under "Example"."""
    description = summary[0].upper() + summary[1:] + "."
    if details:
        description += "\n\n" + details
    p = sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter,
                       epilog="Example:\n  " + "\n  ".join(example.strip().splitlines()))
    # also after the command (`miqd select ... -q`); SUPPRESS keeps a -q given before it
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="only warnings and errors (default: off; also accepted before the command)")
    p.set_defaults(func=func)
    return p


def config_arg(p: argparse.ArgumentParser) -> None:
    """The --config of a stage command: what the Snakemake rules pass (a JSON slice), or a file."""
    p.add_argument(
        "--config", required=True,
        help="YAML config file (its relative paths are taken from the project it belongs to), "
             "or inline JSON (what the Snakemake rules pass, used as given)",
    )
