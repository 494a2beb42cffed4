"""Stage 8 evaluation and scoring: tables in the paper's layout, baselines, `miqd score`."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from miqd import cli, layout
from miqd.correlation import correlations
from miqd.errors import InputError
from miqd.evaluation import render, stage
from miqd.evaluation import tables as evaluation_tables
from miqd.evaluation.tables import Document, Section, Table
from miqd.train import evaluate, files, loop
from train_helpers import region_checkpoint, tiny_photos, train_config, write_pipeline

RUNS = [{"model": "ra_miqa", "task": "cls", "label": "composite"},
        {"model": "resnet18", "task": "det", "label": "composite"},
        {"model": "resnet18", "task": "cls", "label": "accuracy"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_images):
    """The tiny pipeline output with three trained runs (cls and det: cross-task is shown)."""
    root = tmp_path_factory.mktemp("evaluate")
    out = root / "out"
    write_pipeline(out, tiny_photos(demo_images))
    weights = region_checkpoint(root / "lite0.pth")
    config = train_config(out, weights, runs=RUNS, epochs=1)
    for run in RUNS:
        loop.train(config, files.run_name(run))
    return config


@pytest.fixture(scope="module")
def evaluated(trained):
    config = trained
    out = config["outdir"]
    for run in RUNS:
        evaluate.evaluate_run(config, files.run_name(run))
    base = []
    for task in ("cls", "det"):
        path = files.baselines_table(out, task)
        cfg = dict(config, evaluate=dict(config["evaluate"], pyiqa=[
            {"name": "vsi"}, {"name": "not_a_pyiqa_metric"}]))
        evaluate.baselines(cfg, task, path)
        base.append(path)
    preds = [files.evaluate_outputs(out, files.run_name(r))["predictions"] for r in RUNS]
    tables = stage.report(config, preds, base)
    return config, tables


def test_predictions_cover_every_evaluated_task(evaluated):
    config, _ = evaluated
    out = config["outdir"]
    pred = pd.read_parquet(files.evaluate_outputs(out, "ra_miqa_cls_composite")["predictions"])
    assert pred.groupby("task").size().to_dict() == {"cls": 14, "det": 14}  # one val source x 14
    assert np.isfinite(pred["pred"]).all()
    assert not pred["path"].str.startswith("/").any()  # relative to outdir: outputs do not move with it
    summary = pd.read_csv(files.evaluate_outputs(out, "ra_miqa_cls_composite")["summary"])
    own = summary[summary.test_task == "cls"].iloc[0]
    ref = correlations(pred.loc[pred.task == "cls", "pred"], pred.loc[pred.task == "cls", "composite"])
    assert own["srcc"] == pytest.approx(ref["srcc"], abs=1e-5) and own["rmse"] == pytest.approx(ref["rmse"], abs=1e-5)
    assert own["backbone_init"].startswith("seeded random")


def test_baselines_psnr_ssim_and_pyiqa_status(evaluated):
    config, _ = evaluated
    path = files.baselines_table(config["outdir"], "cls")
    base = pd.read_parquet(path)
    labels = pd.read_parquet(f"{config['outdir']}/label/cls/shard-000.parquet")
    val = labels[labels.image_id == "src_3"]
    assert np.allclose(np.sort(base["psnr"]), np.sort(val["psnr"]))  # the label table's, not recomputed
    assert "vsi" in base and np.isfinite(base["vsi"]).all()  # pyiqa full-reference, no weights needed
    status = evaluate.baseline_status(path)
    assert status["vsi"] == "ok" and status["psnr"] == "ok"
    assert "not_a_pyiqa_metric" not in base and "cannot be created" in status["not_a_pyiqa_metric"]


def test_a_named_but_missing_baseline_weights_file_is_an_error(evaluated, tmp_path):
    config, _ = evaluated
    cfg = dict(config, evaluate=dict(config["evaluate"], pyiqa=[
        {"name": "lpips", "weights": {"file": "/nonexistent/lpips.pth"}}]))
    with pytest.raises(InputError, match=r"evaluate.pyiqa lpips: weights file /nonexistent/lpips.pth does not "
                                         r"exist; copy the metric's published checkpoint there"):
        evaluate.baselines(cfg, "cls", str(tmp_path / "b.parquet"))


def test_tables_follow_the_paper(evaluated):
    config, t = evaluated
    t5 = t["table5"]
    assert list(t5["method"]) == ["PSNR", "PSNR", "SSIM", "SSIM", "VSI", "VSI", "RA-MIQA", "ResNet-18"]
    assert set(t5.loc[t5.method == "PSNR", "task"]) == {"cls", "det"}
    # HVS rows: the metric against the composite label on that task's validation images
    base = pd.read_parquet(files.baselines_table(config["outdir"], "det"))
    row = t5[(t5.method == "SSIM") & (t5.task == "det")].iloc[0]
    assert row["srcc"] == pytest.approx(correlations(base["ssim"], base["composite"])["srcc"])
    assert row["plcc"] == pytest.approx(correlations(base["ssim"], base["composite"])["plcc"])
    t6 = t["table6"]
    assert set(t6["label"]) == {"accuracy", "consistency"} and "ResNet-18" in set(t6["method"])
    t7 = t["table7"]
    assert set(t7["region_type"]) == {"UD", "ROI-DD", "BG-DD"}
    ud = t7[(t7.method == "PSNR") & (t7.task == "cls") & (t7.region_type == "UD")].iloc[0]
    sub = base = pd.read_parquet(files.baselines_table(config["outdir"], "cls"))
    sub = base[base.region_type == "UD"]
    assert ud["n"] == len(sub) == 10
    assert ud["srcc"] == pytest.approx(correlations(sub["psnr"], sub["composite"])["srcc"])
    bg = t7[(t7.method == "PSNR") & (t7.task == "cls") & (t7.region_type == "BG-DD")].iloc[0]
    assert bg["n"] == 2 and np.isnan(bg["srcc"])  # fewer than MIN_GROUP images: undefined
    t8 = t["table8"]
    assert set(t8["corruption"]) == {"gaussian_noise", "defocus_blur"}
    assert set(t8["method"]) == {"RA-MIQA", "ResNet-18"}
    cross = t["cross_task"]
    assert len(cross) == 6 and set(zip(cross.train_task, cross.test_task)) == {
        ("cls", "cls"), ("cls", "det"), ("det", "cls"), ("det", "det")}
    sev = t["severity"]
    assert len(sev[sev.run == "ra_miqa_cls_composite"]) == 7  # the fixture's 7 severity pairs


def test_report_files(evaluated):
    config, t = evaluated
    out = files.report_outputs(config["outdir"])
    for key, path in out.items():
        data = open(path, "rb").read()
        assert data, key
        if path.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
    md = open(out["markdown"]).read()
    for title in ("Table 5: composite score", "Table 6", "Table 7", "Table 8", "Fig. 9", "Fig. 8"):
        assert title in md
    assert "| HVS-based | PSNR |" in md and "| Machine-based | RA-MIQA |" in md
    assert "cls SRCC | cls PLCC | cls KRCC | cls RMSE | det SRCC" in md
    assert "baseline not_a_pyiqa_metric on cls: not available" in md
    assert "ra_miqa_cls_composite: backbone seeded random initialisation" in md
    csv = pd.read_csv(out["table5_csv"])
    assert csv.equals(pd.read_csv(out["table5_csv"])) and len(csv) == len(t["table5"])


def test_markdown_and_html_are_rendered_from_the_same_table_data(evaluated):
    """report.json holds the paper-layout tables; report.md is exactly its Markdown rendering."""
    config, t = evaluated
    out = files.report_outputs(config["outdir"])
    doc = stage.load_document(out["tables"])
    assert open(out["markdown"]).read() == render.markdown(doc)
    table7 = next(s for s in doc.sections if s.id == "table7").table
    assert table7.columns[:2] == ["category", "method"] and table7.keys == 2
    assert "cls BG-DD SRCC" in table7.columns
    row = next(r for r in table7.rows if r[:2] == ["HVS-based", "PSNR"])
    bg = row[table7.columns.index("cls BG-DD SRCC")]
    ud = row[table7.columns.index("cls UD SRCC")]
    assert bg is None  # 2 images: undefined, stored as null, not NaN
    long = t["table7"]
    assert ud == pytest.approx(long[(long.method == "PSNR") & (long.task == "cls") & (long.region_type == "UD")]
                               .iloc[0]["srcc"])
    page = render.html_document(doc, lambda level, title, anchor: f"<h{level} id='{anchor}'>{title}</h{level}>",
                                lambda name: f"file:{name}")
    assert render.cell(ud) in page and render.cell(ud) in open(out["markdown"]).read()
    assert not re.search(r"\bnan\b", page, re.IGNORECASE)
    for section in doc.sections:  # every section under its own heading, its figure captioned
        assert f"id='evaluation-{section.id}'>{section.title}</h3>" in page
        if section.figure:
            assert f"src='file:{section.figure.file}'><figcaption>{section.figure.caption}</figcaption>" in page
    assert [s.figure.file for s in doc.sections if s.figure] == ["severity.png", "cross_task.png", "scatter.png"]
    assert doc.notes[0].startswith("data: this workflow")


def test_tables_on_known_scores():
    """Scores equal to the label are perfect; a reversed score correlates -1."""
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"task": "cls", "image_id": "a", "corruption": rng.choice(["fog", "snow"], n),
                       "roi_level": rng.integers(1, 6, n), "bg_level": rng.integers(1, 6, n)})
    df["region_type"] = [layout.region_type(r, b) for r, b in zip(df.roi_level, df.bg_level, strict=True)]
    df["composite"] = rng.uniform(0, 1, n)
    df["consistency"] = df["accuracy"] = df["composite"]
    df["psnr"] = -df["composite"]
    df["ssim"] = df["composite"] ** 3
    run = {"model": "vit_small", "task": "cls", "label": "composite"}
    preds = {"vit_small_cls_composite": df.assign(pred=df["composite"])}
    t = evaluation_tables.tables([run], {"cls": df}, preds)
    t5 = t["table5"].set_index("method")
    assert t5.loc["ViT-small", "srcc"] == pytest.approx(1.0)
    assert t5.loc["ViT-small", "rmse"] == pytest.approx(0, abs=1e-6)
    assert t5.loc["PSNR", "srcc"] == pytest.approx(-1.0) and t5.loc["SSIM", "krcc"] == pytest.approx(1.0)
    assert t5.loc["SSIM", "plcc"] > 0.99  # monotone: the logistic mapping straightens it


def test_cells_read_the_same_in_markdown_and_html():
    table = Table(["method", "SRCC", "n"], [["A <b>", 0.123456, 3], ["B", None, None], ["C", float("nan"), 0]], 1)
    md = render.markdown_table(table)
    assert md.splitlines()[1] == "|---|---:|---:|"
    assert md.splitlines()[2:] == ["| A <b> | 0.1235 | 3 |", "| B | – | – |", "| C | – | 0 |"]
    page = render.html_table(table)
    assert page.startswith("<div class='scroll'><table>")  # wide tables scroll, not overflow the page
    assert "<td class='key'>A &lt;b&gt;</td><td>0.1235</td><td>3</td>" in page
    assert page.count("<td>–</td>") == 3 and not re.search(r"\bnan\b", page, re.IGNORECASE)
    assert render.cell(np.int64(7)) == "7" and render.cell(np.float64(0.5), 2) == "0.50"


def test_a_frame_becomes_a_table_with_its_text_columns_as_keys():
    frame = pd.DataFrame({"task": ["cls", "det"], "region": ["UD", "BG-DD"], "n": [3, 4], "srcc": [0.5, np.nan]})
    table = Table.from_frame(frame, digits=3)
    assert table.keys == 2 and table.rows == [["cls", "UD", 3, 0.5], ["det", "BG-DD", 4, None]]
    assert "<td>4</td><td>–</td>" in render.html_table(table)


def test_the_document_survives_json_and_a_broken_file_is_named(tmp_path):
    doc = Document("T", ["a note"], "conventions", [
        Section("x", "X", Table(["k", "v"], [["a", 1.5], ["b", None]], 1), "(none)"),
        Section("y", "Y", None, "(no runs with this label)"),
        Section("z", "Z", figure=evaluation_tables.Figure("z.png", "what z shows"))])
    path = tmp_path / "report.json"
    path.write_text(doc.to_json())
    assert stage.load_document(str(path)) == doc
    md = render.markdown(doc)
    assert "- a note" in md and "| b | – |" in md and "(no runs with this label)" in md
    assert "![Z](z.png)" in md and "*what z shows*" in md
    path.write_text('{"title": "T"}')
    with pytest.raises(InputError, match=r"report.json is not an evaluation report written by `miqd evaluate "
                                         r"--report` \(KeyError"):
        stage.load_document(str(path))
    with pytest.raises(InputError, match=r"nowhere.json does not exist; run `miqd evaluate --report`"):
        stage.load_document(str(tmp_path / "nowhere.json"))


# ---------------------------------------------------------------------------------------------
# miqd score


def test_score_an_image_and_a_folder(trained, tmp_path, capsys):
    model = files.train_outputs(trained["outdir"], "ra_miqa_cls_composite")["model"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted((pd.read_parquet(f"{trained['outdir']}/label/cls/shard-000.parquet")["path"]))[:3]
    for k, rel in enumerate(src):
        shutil.copy(f"{trained['outdir']}/{rel}", folder / f"img{k}.png")
    assert cli.main(["score", str(folder / "img0.png"), "--checkpoint", model]) == 0
    table = capsys.readouterr().out
    assert "img0.png" in table and "composite score for task cls" in table
    assert cli.main(["score", str(folder), "--checkpoint", model, "--format", "json",
                     "--annotate", str(tmp_path / "annotated")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert all(np.isfinite(r["score"]) for r in rows)
    assert rows[0]["score"] == pytest.approx(float(table.split("img0.png")[1].split()[0]), abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == [
        "img0.score.png", "img1.score.png", "img2.score.png"]
    assert cli.main(["score", str(folder), "--checkpoint", model, "--format", "csv",
                     "--out", str(tmp_path / "s.csv")]) == 0
    csv = pd.read_csv(tmp_path / "s.csv")
    assert list(csv.columns) == ["path", "score", "model", "task", "label"] and len(csv) == 3
    assert csv["score"].to_numpy() == pytest.approx([r["score"] for r in rows], abs=1e-5)
    # the default checkpoint is the config's run of --task
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(trained))
    assert cli.main(["score", str(folder / "img1.png"), "--config", str(cfg), "--task", "det"]) == 0
    assert "composite score for task det" in capsys.readouterr().out


def test_score_a_folder_scores_every_readable_image_and_lists_the_rest(trained, tmp_path, capsys):
    model = files.train_outputs(trained["outdir"], "ra_miqa_cls_composite")["model"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted((pd.read_parquet(f"{trained['outdir']}/label/cls/shard-000.parquet")["path"]))[:2]
    shutil.copy(f"{trained['outdir']}/{src[0]}", folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    shutil.copy(f"{trained['outdir']}/{src[1]}", folder / "c.png")
    (folder / "d.jpg").write_bytes(b"\xff\xd8 truncated")
    assert cli.main(["score", str(folder), "--checkpoint", model, "--format", "csv"]) == 2
    out, err = capsys.readouterr()
    assert pd.read_csv(io.StringIO(out))["path"].str.rsplit("/", n=1).str[1].tolist() == ["a.png", "c.png"]
    assert "2 of 4 images could not be read and were not scored" in err
    assert f"{folder / 'b.png'}: image {folder / 'b.png'} cannot be decoded" in err and str(folder / "d.jpg") in err
    assert cli.main(["score", str(folder), "--checkpoint", model, "--format", "csv", "--skip-errors"]) == 0
    out, _ = capsys.readouterr()
    assert len(pd.read_csv(io.StringIO(out))) == 2


def test_score_errors(trained, tmp_path, capsys):
    model = files.train_outputs(trained["outdir"], "ra_miqa_cls_composite")["model"]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert cli.main(["score", str(bad), "--checkpoint", model]) == 2
    err = capsys.readouterr().err
    assert f"image {bad} cannot be decoded" in err
    assert cli.main(["score", str(bad), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "none.pt does not exist; train a model first" in err
    assert cli.main(["score", str(bad), "--checkpoint", str(bad)]) == 2
    assert "is it a model.pt written by `miqd train`" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["score", str(tmp_path / "empty"), "--checkpoint", model]) == 2
    assert "holds no image files" in capsys.readouterr().err
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(trained))
    assert cli.main(["score", str(bad), "--config", str(cfg), "--task", "ins"]) == 2
    assert "no training run of task ins" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the rules


@pytest.mark.slow
def test_rules_train_evaluate_and_report(tmp_path, demo_images):
    """rules/train.smk end to end on the tiny pipeline output: train, evaluate, baselines, report."""
    import yaml

    from helpers import REPO, snakemake

    out = tmp_path / "out"
    write_pipeline(out, tiny_photos(demo_images))
    config = train_config(out, region_checkpoint(tmp_path / "lite0.pth"),
                          runs=[{"model": "resnet18", "task": "cls", "label": "composite"}], epochs=1)
    config["evaluate"]["tasks"] = ["cls"]
    config["sources"]["imagenet"]["ground_truth"] = str(REPO / config["sources"]["imagenet"]["ground_truth"])
    config["sources"]["coco"]["annotations"] = str(REPO / config["sources"]["coco"]["annotations"])
    config["infer"] = {"registry": str(REPO / "config/models_demo.yaml")}
    polygons = str(REPO / "resources/demo/imagenet/roi_polygons.json")
    config["roi"] = {"imagenet": {"method": "coco_gt", "annotations": polygons},
                     "coco": {"method": "coco_gt", "annotations": config["sources"]["coco"]["annotations"]}}
    # the sources the config names exist (the workflow's preflight checks them before any job)
    import json as _json

    src = out / "src"
    src.mkdir(exist_ok=True)
    n_gt = len(Path(config["sources"]["imagenet"]["ground_truth"]).read_text().splitlines())
    for i in range(1, n_gt + 1):
        (src / config["sources"]["imagenet"]["filename_template"].format(index=i)).write_bytes(b"")
    for im in _json.loads(Path(config["sources"]["coco"]["annotations"]).read_text())["images"]:
        (src / im["file_name"]).write_bytes(b"")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        f'include: "{REPO}/rules/common.smk"\ninclude: "{REPO}/rules/train.smk"\n\n\n'
        "rule all:\n    input:\n        train_targets(),\n")
    args = ["--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
            "--configfile", str(tmp_path / "config.yaml")]
    proc = snakemake(*args, "-n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from helpers import job_counts

    counts = job_counts(proc.stdout)
    assert counts == {"train": 1, "evaluate_run": 1, "evaluate_baselines": 1, "evaluate_report": 1, "all": 1,
                      "total": 5}
    proc = snakemake(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "evaluate" / "report" / "report.md").read_text()
    assert "| Machine-based | ResNet-18 |" in report
    log = (out / "logs" / "train" / "resnet18_cls_composite.log").read_text()
    assert "validation at step" in log and "best validation SRCC" in log
    # nothing left to do; adding a run adds its jobs and the report's, and reruns nothing else
    assert "Nothing to be done" in snakemake(*args, "-n").stdout
    config["train"]["runs"].append({"model": "ra_miqa", "task": "cls", "label": "composite"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    counts = job_counts(snakemake(*args, "-n").stdout)
    assert counts == {"train": 1, "evaluate_run": 1, "evaluate_report": 1, "all": 1, "total": 4}
