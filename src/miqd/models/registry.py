"""The model registry: the label ensemble as data, one entry per vision model.

`load_registry` validates a registry file against `models.schema.yaml` and returns `ModelSpec`s;
`groups` arranges them into the (task, group) units that one inference job runs together.
Everything about a model that changes its predictions is in `ModelSpec.fingerprint`, so a
stored prediction can tell whether it is still valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from miqd.errors import ConfigError
from miqd.schema import check_schema

TASKS = ("cls", "det", "ins")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    backend: str
    arch: str
    weights: str | dict
    benchmark: float
    group: str
    preprocess: dict = field(default_factory=dict)
    score_threshold: float = 0.05
    max_detections: int = 100
    batch_size: int | None = None
    label_map: dict | None = None
    options: dict | None = None
    paper_name: str | None = None
    note: str | None = None

    @property
    def random_weights(self) -> bool:
        """Seeded random parameters: predictions (and labels from them) are not real."""
        return self.weights == "random"

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        return d

    @property
    def fingerprint(self) -> str:
        """Hash of everything that determines the predictions (not paper_name, note, group)."""
        keys = ("id", "task", "backend", "arch", "weights", "preprocess", "score_threshold",
                "max_detections", "label_map")
        fields = {k: getattr(self, k) for k in keys}
        if self.options:  # only when set: entries without options keep their fingerprints
            fields["options"] = self.options
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_registry(source: str | Path) -> list[ModelSpec]:
    """Registry entries from a YAML file, or from inline JSON (as an infer job receives its group)."""
    text = str(source)
    if text.lstrip().startswith("{"):
        path, data = "(inline)", json.loads(text)
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"model registry {path} does not exist (config key infer.registry)")
        data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"model registry {path} is not a mapping with a `models` list")
    check_schema(data, "models", f"model registry {path}")
    specs = []
    defaults = data.get("groups", {})
    seen: dict[str, int] = {}
    for i, entry in enumerate(data["models"]):
        if entry["id"] in seen:
            raise ConfigError(
                f"invalid model registry {path}: models[{i}] repeats id {entry['id']!r} "
                f"(first at models[{seen[entry['id']]}]); ids name the prediction files"
            )
        seen[entry["id"]] = i
        if entry.get("options") and entry["backend"] != "torchvision":
            raise ConfigError(
                f"invalid model registry {path}: model {entry['id']!r} sets options, which only the "
                f"torchvision backend takes (its builder's keyword arguments); remove them"
            )
        group = entry.pop("group", entry["id"])
        entry.setdefault("batch_size", defaults.get(group, {}).get("batch_size"))
        specs.append(ModelSpec(group=group, **entry))
    unknown = sorted(set(defaults) - {s.group for s in specs})
    if unknown:
        raise ConfigError(f"invalid model registry {path}: groups names {', '.join(unknown)}, which no "
                          f"model is in (a typo? groups: {', '.join(sorted({s.group for s in specs}))})")
    return specs


def groups(specs: list[ModelSpec]) -> dict[tuple[str, str], list[ModelSpec]]:
    """{(task, group): models}, in registry order. A group never mixes tasks."""
    out: dict[tuple[str, str], list[ModelSpec]] = {}
    task_of_group: dict[str, str] = {}
    for spec in specs:
        if task_of_group.setdefault(spec.group, spec.task) != spec.task:
            raise ConfigError(
                f"model {spec.id!r} (task {spec.task}) is in group {spec.group!r}, which holds "
                f"{task_of_group[spec.group]} models; a group runs on one task's images"
            )
        out.setdefault((spec.task, spec.group), []).append(spec)
    return out


def by_id(specs: list[ModelSpec]) -> dict[str, ModelSpec]:
    return {s.id: s for s in specs}


