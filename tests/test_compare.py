"""`miqd compare-labels`: our label tables beside a published download of the same images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import miqa_fixture
from helpers import job_counts, snakemake
from miqd import cli, layout
from miqd.errors import InputError
from miqd.label.compare import compare

EXPORT = Path(__file__).parent / "fixtures" / "miqa" / "export"


@pytest.fixture()
def runs(tmp_path):
    """Our run (the tiny fixture's label tables) and a 'published' download whose labels differ."""
    ours = tmp_path / "ours"
    miqa_fixture.build(ours)
    published = tmp_path / "MIQD-2.5M"
    shutil.copytree(EXPORT, published)
    rng = np.random.default_rng(7)
    for csv in sorted((published / "miqa_cls" / "labels").glob("*_mmos.csv")):
        df = pd.read_csv(csv)
        for col in ("weighted_consistency", "weighted_accuracy"):
            df[col] = np.clip(df[col] + rng.normal(0, 0.1, len(df)), 0, 1).round(6)
        df["dist_images"] = [Path(n).name for n in df["dist_images"]]  # bare names, as some copies have
        df.to_csv(csv, index=False)
    for csv in sorted((published / "miqa_det" / "labels").glob("*.csv")):
        df = pd.read_csv(csv)
        df["AP_weighted_avg"] = (1 - df["AP_weighted_avg"]).round(6)  # reversed: correlation -1
        df.to_csv(csv, index=False)
    (published / "miqa_ins" / "labels" / "000000000030_accuracy.csv").unlink()
    (published / "miqa_ins" / "labels" / "000000000030_consistency.csv").unlink()
    return ours, published


def _independent(ours: Path, published: Path, task: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Ours and theirs paired by file name, read without miqd's reader."""
    table = pd.concat([pd.read_parquet(p) for p in sorted((ours / "label" / task).glob("*.parquet"))])
    table["name"] = table["path"].map(lambda p: Path(p).name)
    if task == "cls":
        pub = pd.concat([pd.read_csv(p) for p in (published / "miqa_cls" / "labels").glob("*_mmos.csv")])
        pub = pub.rename(columns={"dist_images": "name", "weighted_consistency": "consistency",
                                  "weighted_accuracy": "accuracy"})
    else:
        folder = published / ("miqa_det" if task == "det" else "miqa_ins") / "labels"
        parts = {k: pd.concat([pd.read_csv(p) for p in folder.glob(f"*_{k}.csv")]).rename(
            columns={"filename": "name", "AP_weighted_avg": k}) for k in ("consistency", "accuracy")}
        pub = parts["consistency"].merge(parts["accuracy"], on="name")
    pub["composite"] = 0.5 * pub["consistency"] + 0.5 * pub["accuracy"]
    both = table.merge(pub[["name", label]], on="name", suffixes=("", "_pub"))
    return both[label].to_numpy(), both[f"{label}_pub"].to_numpy()


def test_agreement_per_task_and_label_against_scipy(runs, capsys):
    ours, published = runs
    assert cli.main(["compare-labels", "--outdir", str(ours), "--published", str(published)]) == 0
    out = layout.compare_outputs(str(ours))
    table = pd.read_csv(out["csv"])
    for task in ("cls", "det", "ins"):
        for label in ("consistency", "accuracy", "composite"):
            x, y = _independent(ours, published, task, label)
            row = table[(table.task == task) & (table.label == label) & (table.by == "all")].iloc[0]
            assert row.n == len(x)
            assert row.srcc == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-5)
            assert row.plcc == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-5)
    det = table[(table.task == "det") & (table.by == "all")]
    assert np.allclose(det["plcc"], -1, atol=1e-5)  # reversed labels
    assert table.loc[(table.task == "ins") & (table.by == "all"), "n"].tolist() == [20, 20, 20]  # one source gone
    groups = table[(table.task == "cls") & (table.label == "composite")]
    assert set(groups.loc[groups.by == "corruption", "group"]) == set(miqa_fixture.CORRUPTIONS)
    assert set(groups.loc[groups.by == "region_type", "group"]) == {"UD", "ROI-DD", "BG-DD"}
    jpeg = groups[groups.group == "jpeg_compression"].iloc[0]
    assert jpeg.n == 15  # 3 sources x 5 level pairs
    md = Path(out["md"]).read_text()
    assert "ins: 20 of our 30 images have a published label; no published label file for 1 source " \
           "(e.g. 000000000030)" in md
    assert Path(out["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "det  composite" in printed and "SRCC -1.0000" in printed
    from miqd import report

    report.build(str(ours), [], {}, False, str(ours / "index.html"), None, compared=True)
    page = (ours / "index.html").read_text()
    assert "<h2>Regenerated vs published labels</h2>" in page and "no published label file for 1 source" in page
    assert page.count("data:image/png;base64,") == 1 and "jpeg_compression" in page


def test_errors_name_the_folder(runs, tmp_path):
    ours, published = runs
    with pytest.raises(InputError, match=r"nowhere/miqa_cls/labels does not exist; --published \(compare\.published\) "
                                         r"must be the MIQD-2.5M root"):
        compare(str(ours), str(tmp_path / "nowhere"), ["cls"])
    for csv in (published / "miqa_cls" / "labels").glob("*.csv"):
        csv.unlink()
    with pytest.raises(InputError, match=r"task cls: none of our 30 images has a published label"):
        compare(str(ours), str(published), ["cls"])
    with pytest.raises(InputError, match=r"no label tables of task det under .*empty/label/det; run the label stage"):
        compare(str(tmp_path / "empty"), str(published), ["det"])


def test_the_workflow_compares_when_configured(tmp_path):
    proc = snakemake("-n", "--config", f"outdir={tmp_path}", f"compare={{published: {tmp_path / 'MIQD'}}}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts["compare_labels"] == 1 and counts["report"] == 1
    assert "--compared" in proc.stdout or "compare/labels.csv" in proc.stdout
