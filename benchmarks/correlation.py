"""Rank statistics at the validation table's scale: miqd.correlation against scipy.stats.

    python benchmarks/correlation.py [--n 200000] [--repeats 3]

Why: SRCC and KRCC are computed for every (model, task, label) pair of the validation and
evaluation tables. miqd uses scipy's where it is as fast or faster (KRCC) and its own NumPy
average-rank SRCC where that is faster; this prints both, with ties as MMOS labels have them
(scores rounded to a few decimals), and checks that the values agree.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import stats

from miqd import correlation


def best_time(fn, repeats: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = float(fn())
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random(args.n).round(3)
    y = (x + rng.normal(0, 0.3, args.n)).round(2)
    print(f"n = {args.n:,} (tied scores), best of {args.repeats}\n")
    print("| statistic | miqd s | scipy s | scipy / miqd | |miqd - scipy| |")
    print("|---|---:|---:|---:|---:|")
    for name, ours, theirs in (("SRCC", correlation.srcc, lambda a, b: stats.spearmanr(a, b).statistic),
                               ("KRCC", correlation.krcc, lambda a, b: stats.kendalltau(a, b).statistic)):
        t_ours, v_ours = best_time(lambda: ours(x, y), args.repeats)
        t_theirs, v_theirs = best_time(lambda: theirs(x, y), args.repeats)
        print(f"| {name} | {t_ours:.3f} | {t_theirs:.3f} | {t_theirs / t_ours:.2f} | {abs(v_ours - v_theirs):.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
