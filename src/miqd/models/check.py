"""`miqd models check | list`: the registry before any GPU time is spent (fetch: fetch.py).

`check` first looks, without building anything, for every model's checkpoint and backend (and an
mmdet model's config file and custom imports), so a registry that cannot run (weights or sources
not fetched, mmdet not installed) fails in seconds and names all of them; then it builds every model on the CPU with its weights loaded (architecture known,
checkpoint of the right shape, label space mappable to ImageNet-1k or COCO) and runs it once on
a small image. It reports every problem, not only the first, and exits non-zero if any.
"""

from __future__ import annotations

import time

import numpy as np

from miqd.errors import InputError
from miqd.models.registry import ModelSpec, load_registry


def _select(registry: str, task: str | None) -> list[ModelSpec]:
    return [s for s in load_registry(registry) if task is None or s.task == task]


def preflight(specs: list[ModelSpec]) -> dict[str, str]:
    """{model id: what is missing and how to fix it} for models whose checkpoint or backend is
    absent, found without building any model (seconds for a registry of large models)."""
    from miqd.models.weights import checkpoint_path

    problems: dict[str, str] = {}
    for spec in specs:
        found = []
        try:
            checkpoint_path(spec)
        except InputError as err:
            found.append(str(err))
        if spec.backend == "mmdet":
            from miqd.models.backends.mmdet_backend import config_problems, require_mmdet

            try:
                require_mmdet()
            except InputError as err:
                found.append(f"model {spec.id!r}: {err}")
            found += config_problems(spec)
        if found:
            problems[spec.id] = "; ".join(found)
    return problems


def check(registry: str, task: str | None = None) -> int:
    from miqd.models.backends import create_predictor

    specs = _select(registry, task)
    missing = preflight(specs)
    if missing:
        for spec in specs:
            status = f"ERROR: {missing[spec.id]}" if spec.id in missing else "weights present (not built)"
            print(f"{spec.id:32s} {spec.task:3s} {spec.backend:11s}  {status}", flush=True)
        print(f"\n{len(specs) - len(missing)} of {len(specs)} models have their weights and backend; "
              f"fix: {', '.join(missing)}; nothing was built (run check again once they are there)")
        return 2
    probe = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    failures = []
    for spec in specs:
        start = time.perf_counter()
        try:
            predictor = create_predictor(spec, "cpu")
            predictor.predict([probe])
            status = "ok (random weights: labels NOT real)" if spec.random_weights else "ok"
        except InputError as err:
            status = f"ERROR: {err}"
            failures.append(spec.id)
        print(f"{spec.id:32s} {spec.task:3s} {spec.backend:11s} {time.perf_counter() - start:6.1f}s  {status}",
              flush=True)
    print(f"\n{len(specs) - len(failures)} of {len(specs)} models ready"
          + (f"; fix: {', '.join(failures)}" if failures else ""))
    return 2 if failures else 0


def list_models(registry: str, task: str | None = None) -> int:
    print(f"{'id':32s} {'task':4s} {'backend':11s} {'benchmark':>9s} {'group':20s} weights")
    for s in _select(registry, task):
        weights = s.weights if isinstance(s.weights, str) else ", ".join(f"{k}={v}" for k, v in s.weights.items())
        print(f"{s.id:32s} {s.task:4s} {s.backend:11s} {s.benchmark:9.2f} {s.group:20s} {weights}")
    return 0
