"""miqd.correlation against scipy.stats, and the logistic fit on data with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import curve_fit

from miqd import correlation


def _vectors(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many ties in both, like binary consistency labels
        x = rng.integers(0, 4, n).astype(float)
        y = x + rng.integers(0, 3, n)
        return x, y
    x = rng.normal(size=n)
    return x, 0.5 * x + rng.normal(size=n)


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [2, 3, 17, 500, 4001])
def test_rank_and_linear_correlations_match_scipy(n: int, ties: bool) -> None:
    for seed in range(5):
        x, y = _vectors(seed, n, ties)
        for ours, ref in [
            (correlation.srcc(x, y), stats.spearmanr(x, y).statistic),
            (correlation.krcc(x, y), stats.kendalltau(x, y).statistic),  # tau-b
            (correlation.plcc(x, y), stats.pearsonr(x, y).statistic if np.ptp(x) and np.ptp(y) else np.nan),
        ]:
            if np.isnan(ref):
                assert np.isnan(ours)
            else:
                assert ours == pytest.approx(ref, abs=1e-12)
        assert correlation.rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)), abs=1e-12)


def test_kendall_on_permutations_counts_inversions() -> None:
    n = 10
    assert correlation.krcc(np.arange(n), np.arange(n)) == pytest.approx(1.0, abs=1e-12)
    assert correlation.krcc(np.arange(n), np.arange(n)[::-1]) == pytest.approx(-1.0, abs=1e-12)
    y = np.arange(n)
    y[[0, 1]] = y[[1, 0]]  # one swapped pair of 45
    assert correlation.krcc(np.arange(n), y) == pytest.approx((44 - 1) / 45)


def test_constant_vector_gives_nan() -> None:
    x = np.ones(20)
    y = np.arange(20.0)
    assert np.isnan(correlation.srcc(x, y)) and np.isnan(correlation.krcc(x, y)) and np.isnan(correlation.plcc(x, y))
    out = correlation.correlations(x, y)
    assert np.isnan(out["srcc"]) and np.isnan(out["plcc"])
    # the mapping of a constant predictor is the mean label: RMSE is the label's std
    assert out["rmse"] == pytest.approx(np.std(y))


@pytest.mark.parametrize(
    "bad, message",
    [
        (([1.0, 2.0], [1.0, 2.0, 3.0]), "differ in length"),
        (([1.0], [1.0]), "at least 2"),
        (([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]), "NaN"),
    ],
)
def test_bad_input_is_an_error(bad, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        correlation.correlations(*bad)


TRUE_PARAMS = [
    (0.8, 6.0, 0.4, 0.05, 0.5),  # rising sigmoid on [0, 1] predictions
    (-30.0, 0.3, 25.0, 0.0, 40.0),  # falling, PSNR-like units
    (2.0, -2.0, -1.0, 0.3, 1.0),  # negative slope parameter, linear part
]


@pytest.mark.parametrize("params", TRUE_PARAMS)
def test_logistic_fit_recovers_known_mapping(params) -> None:
    rng = np.random.default_rng(0)
    a3 = params[2]
    q = rng.uniform(a3 - 8 / abs(params[1]), a3 + 8 / abs(params[1]), 3000)
    clean = correlation.logistic5(q, *params)
    y = clean + rng.normal(scale=1e-3 * np.ptp(clean), size=q.size)
    fitted = correlation.fit_logistic5(q, y)
    # the curve is what matters (a1, a2 can trade sign: a1 σ(-z) form); it equals the truth
    assert np.max(np.abs(correlation.logistic5(q, *fitted) - clean)) < 5e-3 * np.ptp(clean)
    # and with the sign convention a2 > 0 the parameters themselves come back
    a1, a2, a3_, a4, a5 = fitted
    if np.sign(a2) != np.sign(params[1]):  # a1 (1/2 - σ(z)) == -a1 (1/2 - σ(-z)): same curve
        a1, a2 = -a1, -a2
    assert [a1, a2, a3_, a4, a5] == pytest.approx(list(params), rel=0.05, abs=0.02 * max(1, abs(params[0])))


def test_logistic_fit_is_least_squares_like_scipy() -> None:
    rng = np.random.default_rng(1)
    q = rng.uniform(0, 1, 400)
    y = 1 / (1 + np.exp(-8 * (q - 0.6))) + rng.normal(scale=0.05, size=q.size)
    ours = correlation.fit_logistic5(q, y)
    ref, _ = curve_fit(correlation.logistic5, q, y, p0=[1, 8, 0.6, 0, 0.5], maxfev=20000)
    sse = lambda p: np.sum((correlation.logistic5(q, *p) - y) ** 2)  # noqa: E731
    assert sse(ours) <= sse(ref) * (1 + 1e-6)


def test_correlations_fits_plcc_and_rmse_only() -> None:
    rng = np.random.default_rng(2)
    q = rng.uniform(0, 1, 1000)
    y = np.tanh(6 * (q - 0.5)) * 0.4 + 0.5 + rng.normal(scale=0.02, size=q.size)
    raw = correlation.correlations(q, y, fit=False)
    fitted = correlation.correlations(q, y, fit=True)
    assert raw["srcc"] == fitted["srcc"] == pytest.approx(stats.spearmanr(q, y).statistic)
    assert raw["krcc"] == fitted["krcc"] == pytest.approx(stats.kendalltau(q, y).statistic)
    assert raw["plcc"] == pytest.approx(stats.pearsonr(q, y).statistic)
    assert raw["rmse"] == pytest.approx(np.sqrt(np.mean((q - y) ** 2)))
    # the sigmoid is in the family: after the fit the residual is the noise
    assert fitted["plcc"] > raw["plcc"] and fitted["plcc"] > 0.99
    assert fitted["rmse"] == pytest.approx(0.02, rel=0.1)
    assert fitted["n"] == 1000
    # a monotone transform of the predictions changes neither rank statistic
    warped = correlation.correlations(np.exp(3 * q), y)
    assert warped["srcc"] == pytest.approx(fitted["srcc"]) and warped["krcc"] == pytest.approx(fitted["krcc"])


def test_fit_on_few_points_is_never_worse_than_a_line() -> None:
    q = np.array([0.1, 0.5, 0.2, 0.9])
    y = np.array([0.2, 0.4, 0.35, 0.8])
    p = correlation.fit_logistic5(q, y)
    line = np.polyval(np.polyfit(q, y, 1), q)
    assert np.sum((correlation.logistic5(q, *p) - y) ** 2) <= np.sum((line - y) ** 2) + 1e-12
