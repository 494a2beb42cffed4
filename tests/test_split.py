"""The split stage: 4:1 by source image, stratified, deterministic, with the upstream CSV formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from miqd.errors import InputError
from miqd.io import write_table
from miqd.label.split import balance, run, split_cls, split_multilabel
from miqd.select import SELECT_SCHEMA


def test_cls_is_exactly_four_plus_one_per_class_and_independent_of_order():
    classes = {f"img{c:03d}_{k}": c for c in range(50) for k in range(5)}
    got = split_cls(classes, 0.2, seed=0)
    per_class = pd.Series(got).groupby(pd.Series(classes)).agg(lambda s: (s == "val").sum())
    assert (per_class == 1).all()
    shuffled = dict(sorted(classes.items(), key=lambda kv: hash(kv[0]) % 97))
    assert split_cls(shuffled, 0.2, seed=0) == got
    assert split_cls(classes, 0.2, seed=1) != got  # the seed chooses which one is val


def test_classes_too_small_to_split_are_pooled():
    """The demo has one source per class: pooled, round(6 x 0.2) = 1 of them goes to val."""
    got = split_cls({f"demo_{i}": 100 + i for i in range(6)}, 0.2, seed=0)
    assert sorted(got.values()).count("val") == 1
    mixed = split_cls({**{f"a{k}": 1 for k in range(5)}, "b0": 2, "c0": 3}, 0.2, seed=0)
    assert [mixed[f"a{k}"] for k in range(5)].count("val") == 1  # class 1 split on its own
    assert (mixed["b0"], mixed["c0"]).count("val") == 0  # pool of 2: round(0.4) = 0 val


def _coco_like(n: int, seed: int = 0) -> dict[str, list[int]]:
    """Images with 1-4 categories drawn from a skewed (COCO-like) category distribution."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 81) ** 1.1
    p /= p.sum()
    out = {}
    for i in range(n):
        k = rng.choice([1, 1, 2, 3, 4])
        out[f"{i + 1:012d}"] = sorted(set(rng.choice(80, size=k, p=p).tolist()))
    return out


def test_coco_split_has_the_exact_size_and_balanced_classes():
    cats = _coco_like(1500)
    got = split_multilabel(cats, 0.2, seed=0)
    assert sorted(got) == sorted(cats)
    assert list(got.values()).count("val") == 300  # round(1500 x 0.2), after the final adjustment
    report = balance(got, cats, 0.2)
    big = report[report["images"] >= 40]
    assert len(big) >= 10
    assert big["deviation"].abs().max() < 0.05, big.sort_values("deviation").to_string()
    # single-category images are stratified per category: 4:1 within each (big) category
    single = {i: c for i, c in cats.items() if len(c) == 1}
    for c, ids in pd.Series({i: c[0] for i, c in single.items()}).groupby(lambda i: single[i][0]):
        n = len(ids)
        if n >= 10:
            assert [got[i] for i in ids.index].count("val") == int(np.floor(n * 0.2 + 0.5))
    assert split_multilabel(dict(reversed(list(cats.items()))), 0.2, seed=0) == got


def _select(tmp_path, rows, name):
    path = tmp_path / name
    write_table(path, pa.Table.from_pylist(rows, schema=SELECT_SCHEMA))
    return str(path)


def test_run_writes_the_table_balance_and_upstream_csvs(tmp_path):
    rows = [dict(image_id=f"ILSVRC2012_val_{c * 5 + k + 1:08d}", path=f"/x/ILSVRC2012_val_{c * 5 + k + 1:08d}.JPEG",
                 width=10, height=10, class_index=c, class_name=f"class {c}", categories=None,
                 score=0.5 + 0.01 * k, selected=True) for c in range(3) for k in range(5)]
    rows.append(dict(rows[0], image_id="ILSVRC2012_val_00009999", path="/x/n.JPEG", selected=False))
    shards = [_select(tmp_path, rows[:10], "s0.parquet"), _select(tmp_path, rows[10:], "s1.parquet")]
    paths = {"train": str(tmp_path / "miqa_cls_train.csv"), "val": str(tmp_path / "miqa_cls_val.csv")}
    table = run("imagenet", shards, 0.2, 0, str(tmp_path / "split.parquet"), str(tmp_path / "b.csv"), paths)
    assert len(table) == 15 and (table["split"] == "val").sum() == 3  # the unselected candidate is left out
    train = pd.read_csv(paths["train"])
    assert list(train.columns) == ["Image Name", "Category", "Quality Score"]
    assert len(train) == 12 and train["Image Name"].str.endswith(".JPEG").all()
    assert set(train["Category"]) == {"class 0", "class 1", "class 2"}
    report = pd.read_csv(tmp_path / "b.csv")
    assert report["train_fraction"].tolist() == [0.8, 0.8, 0.8]
    # the same sources in one shard: the same split
    one = run("imagenet", [_select(tmp_path, rows, "all.parquet")], 0.2, 0, str(tmp_path / "s2.parquet"),
              str(tmp_path / "b2.csv"), {"train": str(tmp_path / "t2.csv"), "val": str(tmp_path / "v2.csv")})
    pd.testing.assert_frame_equal(one, table)


def test_coco_run_writes_image_indices_and_needs_categories(tmp_path):
    cats = _coco_like(40, seed=3)
    rows = [dict(image_id=i, path=f"/c/{i}.jpg", width=10, height=10, class_index=None, class_name=None,
                 categories=c, score=None, selected=True) for i, c in cats.items()]
    paths = {"train": str(tmp_path / "miqa_det_train.csv"), "val": str(tmp_path / "miqa_det_val.csv")}
    run("coco", [_select(tmp_path, rows, "c.parquet")], 0.2, 0, str(tmp_path / "s.parquet"),
        str(tmp_path / "b.csv"), paths)
    val = pd.read_csv(paths["val"])
    assert list(val.columns) == ["Image Index"] and len(val) == 8
    assert set(val["Image Index"]) <= {int(i) for i in cats}
    names = dict(pd.read_csv(tmp_path / "b.csv", keep_default_na=False)[["class", "name"]].itertuples(index=False))
    assert names[1] == "person" and names[2] == "bicycle" and names[0] == ""  # COCO's names; 0 is no COCO id
    rows[0]["categories"] = []
    with pytest.raises(InputError, match=r"sources \['000000000001'\] have no annotated category"):
        run("coco", [_select(tmp_path, rows, "bad.parquet")], 0.2, 0, str(tmp_path / "s.parquet"),
            str(tmp_path / "b.csv"), paths)
