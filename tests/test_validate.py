"""Label validation (paper Table 4): partitions, per-trial agreement, the table's layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from miqd.errors import InputError
from miqd.label.validate import partitions, table4, table4_markdown, trials


def test_partitions_are_seeded_sized_and_never_empty():
    parts = partitions(40, 100, 0.8, seed=0, task="cls")
    assert all(len(p) == 32 for p in parts)
    assert len({tuple(p) for p in parts}) > 90
    assert [p.tolist() for p in parts] == [p.tolist() for p in partitions(40, 100, 0.8, 0, "cls")]
    assert [p.tolist() for p in parts] != [p.tolist() for p in partitions(40, 100, 0.8, 0, "det")]
    assert {len(p) for p in partitions(2, 10, 0.8, 0, "det")} == {1}  # each part keeps one model
    with pytest.raises(InputError, match=r"task ins needs at least 2 models, the registry has 1"):
        partitions(1, 10, 0.8, 0, "ins")


def test_two_models_compare_their_own_scores():
    """With two models every partition is {one} vs {other}: the labels are the models' scores."""
    rng = np.random.default_rng(0)
    c, a = rng.random((500, 2)), rng.random((500, 2))
    got = trials(c, a, np.array([70.0, 80.0]), lam=0.5, weights="benchmark", n_trials=4, fraction=0.8, seed=0,
                 task="cls", model_ids=["x", "y"])
    assert len(got) == 12 and set(got["label"]) == {"consistency", "accuracy", "composite"}
    row = got[(got.label == "consistency")].iloc[0]
    assert row.srcc == pytest.approx(stats.spearmanr(c[:, 0], c[:, 1])[0])
    assert row.plcc == pytest.approx(stats.pearsonr(c[:, 0], c[:, 1])[0])
    assert row.rmse == pytest.approx(np.sqrt(np.mean((c[:, 0] - c[:, 1]) ** 2)))
    comp = got[(got.label == "composite")].iloc[0]
    assert comp.srcc == pytest.approx(stats.spearmanr(c[:, 0] + a[:, 0], c[:, 1] + a[:, 1])[0])


def test_models_that_agree_validate_perfectly():
    base = np.random.default_rng(1).random((300, 1))
    c = np.repeat(base, 5, axis=1)
    got = trials(c, c, np.array([1.0, 2, 3, 4, 5]), lam=0.5, weights="benchmark", n_trials=10, fraction=0.8,
                 seed=0, task="det", model_ids=list("abcde"))
    assert np.allclose(got[["srcc", "plcc"]], 1.0) and np.allclose(got["rmse"], 0.0)
    assert (got["part_a"].str.count(",") == 3).all()  # 4 models + 1


def test_table4_layout_means_and_stds():
    rows = [{"task": t, "trial": k, "label": lab, "srcc": v, "plcc": v / 2, "rmse": 1 - v}
            for t in ("cls", "det") for lab in ("consistency", "accuracy", "composite")
            for k, v in enumerate([0.8, 0.9, 1.0])]
    table = table4([pd.DataFrame(rows)])
    assert table.columns.tolist() == ["Metric", "Statistic", "cls SRCC", "cls PLCC", "cls RMSE", "det SRCC",
                                      "det PLCC", "det RMSE"]
    assert table["Metric"].tolist() == ["Consistency Score"] * 2 + ["Accuracy Score"] * 2 + ["Composite Score"] * 2
    assert table.loc[0, "cls SRCC"] == pytest.approx(0.9) and table.loc[1, "cls SRCC"] == pytest.approx(0.1)
    assert table.loc[0, "det RMSE"] == pytest.approx(0.1)
    md = table4_markdown(table, ["a note"])
    assert "| Consistency Score | Mean | 0.900 | 0.450 | 0.100 |" in md and "- a note" in md
    assert "Image Classification SRCC ↑" in md and "Object Detection RMSE ↓" in md
