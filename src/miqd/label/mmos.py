"""MMOS: the ensemble's consistency, accuracy and composite labels (paper eqs. 2, 4, 5).

`E_C = Σ α_i C_i`, `E_A = Σ α_i A_i`, `composite = λ·E_C + (1 − λ)·E_A`, with α from the models'
benchmark scores (top-1, box AP, mask AP; paper Table 3) normalised to sum to 1 *within the models
used* — so a subset of the ensemble (label validation, a new model) gets weights of its own.

A score can be undefined (NaN) for a pair when the label config says so
(`label.empty_reference: exclude`); the MMOS of that image then averages over the models that have
a score, with their α renormalised, and is NaN only when no model has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from miqd.errors import InputError

WEIGHT_SCHEMES = ("benchmark", "uniform")
LABEL_TYPES = ("consistency", "accuracy", "composite")


def model_weights(benchmarks: Mapping[str, float], scheme: str = "benchmark") -> dict[str, float]:
    """α per model: benchmark scores normalised to sum 1 (or uniform), in the mapping's order."""
    if scheme not in WEIGHT_SCHEMES:
        raise InputError(f"unknown model weighting {scheme!r}; allowed: {', '.join(WEIGHT_SCHEMES)}")
    if not benchmarks:
        raise InputError("no models to weight: the task's ensemble is empty")
    values = np.array([float(benchmarks[m]) for m in benchmarks])
    if scheme == "uniform":
        values = np.ones_like(values)
    if np.any(values <= 0) or not np.all(np.isfinite(values)):
        bad = [m for m, v in zip(benchmarks, values, strict=True) if not (v > 0 and np.isfinite(v))]
        raise InputError(f"benchmark scores must be positive numbers; check the registry entries {bad}")
    values = values / values.sum()
    return dict(zip(benchmarks, values.tolist(), strict=True))


def weighted_mean(scores: np.ndarray, alpha: Sequence[float]) -> np.ndarray:
    """Σ α_i s_i per row of `scores` (images × models), α renormalised over each row's defined scores."""
    scores = np.asarray(scores, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != alpha.size:
        raise ValueError(f"scores {scores.shape} do not match {alpha.size} weights")
    defined = np.isfinite(scores)
    if defined.all():
        return scores @ (alpha / alpha.sum())
    weight = defined @ alpha
    total = np.where(defined, scores, 0.0) @ alpha
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)


def composite(consistency: np.ndarray, accuracy: np.ndarray, lam: float) -> np.ndarray:
    """λ·E_C + (1 − λ)·E_A (λ = 0.5 in MIQD-2.5M)."""
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"label.lambda must lie in [0, 1], got {lam}")
    return lam * np.asarray(consistency, np.float64) + (1.0 - lam) * np.asarray(accuracy, np.float64)


def mmos(consistency: np.ndarray, accuracy: np.ndarray, alpha: Sequence[float],
         lam: float) -> dict[str, np.ndarray]:
    """The three labels from per-model score matrices (images × models)."""
    e_c = weighted_mean(consistency, alpha)
    e_a = weighted_mean(accuracy, alpha)
    return {"consistency": e_c, "accuracy": e_a, "composite": composite(e_c, e_a, lam)}
