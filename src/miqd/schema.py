"""The JSON schemas (config, model registry) and checking data against them.

A leaf module: it loads the schema files shipped in the package and needs nothing else of miqd,
so the registry, the config and the stages can all check against the one schema the Snakefile uses.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from miqd.errors import ConfigError


@cache
def schema(name: str = "config") -> dict:
    text = resources.files("miqd").joinpath(f"schemas/{name}.schema.yaml").read_text()
    return yaml.safe_load(text)


def _resolve(node: dict, root: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _fill_defaults(instance: Any, node: dict, root: dict) -> None:
    node = _resolve(node, root)
    if isinstance(instance, list) and "items" in node:
        for item in instance:
            _fill_defaults(item, node["items"], root)
        return
    if not isinstance(instance, dict):
        return
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _message(err: jsonschema.ValidationError) -> str:
    where = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        return f"unknown key {keys}; allowed keys here: {', '.join(allowed)}"
    if err.validator == "required":
        return f"key {where}: {err.message}"
    return f"key {where}: {err.message}"


def check_schema(data: dict, name: str, what: str) -> dict:
    """Fill the schema's defaults into `data` (in place) and raise ConfigError naming bad keys."""
    root = schema(name)
    _fill_defaults(data, root, root)
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(f"invalid {what}: " + "; ".join(_message(e) for e in errors))
    return data
