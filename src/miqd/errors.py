"""The errors a user acts on. A leaf module: importing it loads nothing else of the package."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input a user must fix: the message names the file or key and what to do."""


class ConfigError(InputError):
    """The config (or model registry) is invalid; the message names the key."""
