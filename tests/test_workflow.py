"""The Snakemake workflow: lint, dry runs (demo and full scale), and the demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO
from helpers import demo_config, job_counts, published_files, snakemake
from miqd.models.registry import load_registry



def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_demo_dry_run_lists_per_shard_jobs(tmp_path):
    proc = snakemake("-n", "--config", f"outdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout) == {
        "all": 1, "demo_sources_coco": 1, "demo_sources_imagenet": 1, "distort": 3,
        "distort_figures": 2, "infer": 4, "merge_distort": 2, "roi": 3, "select": 3,
        "label": 4, "export_labels_cls": 1, "export_labels_det": 1, "export_labels_ins": 1,
        "export_additional_info": 1, "validate": 2, "validation_table": 1, "split_imagenet": 1, "split_coco": 1,
        "train": 2, "evaluate_run": 2, "evaluate_baselines": 2, "evaluate_report": 1, "report": 1,
        "total": 41,
    }
    # the demo's ins ensemble is one model: its labels cannot be validated, and the run says so
    assert "task ins has a single model: its labels cannot be validated" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def full_scale_config(tmp_path_factory) -> Path:
    """Empty stand-in files shaped like ImageNet val and COCO val2017, and a config for them."""
    from miqd.standin import make_standin

    root = tmp_path_factory.mktemp("standin")
    path = make_standin(root, REPO / "config" / "miqd25m.yaml")
    assert len(list((root / "imagenet" / "val").iterdir())) == 50_000
    coco = json.loads((root / "coco" / "annotations" / "instances_val2017.json").read_text())
    assert len(coco["images"]) == 5000 and len({a["image_id"] for a in coco["annotations"]}) == 4952
    return path


def test_full_scale_dry_run_is_per_shard_not_per_image(full_scale_config):
    cfg = yaml.safe_load(full_scale_config.read_text())
    proc = snakemake("-n", "--configfile", str(full_scale_config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_in, n_coco = cfg["sources"]["imagenet"]["shards"], cfg["sources"]["coco"]["shards"]
    registry = load_registry(REPO / cfg["infer"]["registry"])
    cls_groups = len({s.group for s in registry if s.task == "cls"})
    coco_groups = len({s.group for s in registry if s.task in ("det", "ins")})
    per_shard = ("select", "roi", "distort")
    per_dataset = ("merge_distort", "distort_figures")
    expected = {rule: n_in + n_coco for rule in per_shard}
    expected.update({rule: 2 for rule in per_dataset}, all=1)
    expected["infer"] = cls_groups * n_in + coco_groups * n_coco
    expected["label"] = n_in + 2 * n_coco  # per (task, shard): cls on imagenet, det and ins on coco
    expected.update({f"export_labels_{t}": 1 for t in ("cls", "det", "ins")}, validate=3, validation_table=1)
    expected["export_additional_info"] = 1  # the COCO annotations where MIQA's det/ins loaders look
    expected.update(split_imagenet=1, split_coco=1, report=1)
    n_runs, n_eval = len(cfg["train"]["runs"]), len(cfg["evaluate"]["tasks"])
    expected.update(train=n_runs, evaluate_run=n_runs, evaluate_baselines=n_eval, evaluate_report=1)
    expected["total"] = sum(expected.values())
    print(f"full-scale DAG: {expected['total']} jobs = {len(per_shard)} x ({n_in} + {n_coco}) shards "
          f"+ {len(per_dataset)} x 2 datasets + infer ({cls_groups} x {n_in} + {coco_groups} x {n_coco}) "
          f"+ label ({n_in} + 2 x {n_coco}) + 4 label exports + 3 validate + table + 2 splits "
          f"+ {n_runs} x (train + evaluate) + {n_eval} baselines + evaluation tables + report + all")
    assert job_counts(proc.stdout) == expected
    assert expected["total"] < 5000  # per shard, never per image: 2.5 M images stay a few thousand jobs
    assert "demo_sources" not in proc.stdout  # nothing of the demo config leaks in


@pytest.mark.slow
def test_demo_end_to_end_is_byte_identical_across_sharding_and_workers(demo_run, tmp_path):
    a, b = demo_run, tmp_path / "b"  # a: 2 + 1 shards, 2 workers per job; b: 4 + 3 shards, 1 worker
    cfg_b = demo_config(b, imagenet=4, coco=3)
    cfg = yaml.safe_load(cfg_b.read_text())
    cfg["distort"]["threads"] = 1
    cfg_b.write_text(yaml.safe_dump(cfg))
    proc = snakemake("distorted", "--cores", "2", "--configfile", str(cfg_b))
    assert proc.returncode == 0, proc.stderr[-4000:]

    files_a, files_b = published_files(a), published_files(b)
    assert sum(k.endswith(".png") and "/images/" in k for k in files_a) == 9 * 250
    assert files_a.keys() == files_b.keys()
    different = [k for k in files_a if files_a[k] != files_b[k]]
    assert different == []
    for dataset, n_sources in (("imagenet", 6), ("coco", 3)):
        merged = a / "distort" / f"{dataset}.parquet"
        assert merged.read_bytes() == (b / "distort" / f"{dataset}.parquet").read_bytes()
        m = pd.read_parquet(merged)
        assert len(m) == 250 * n_sources and m.image_id.nunique() == n_sources
        with Image.open(a / "distort" / f"{dataset}.examples.png") as sheet:  # 10 rows of thumbnails
            first = Image.open(a / m.path.iloc[0])
            thumb_h = round(first.height * 128 / max(first.size))
            assert sheet.height == 18 + 10 * thumb_h
        with Image.open(a / "distort" / f"{dataset}.quality.png") as fig:
            assert fig.width > 800

    # a second run finds nothing to do: nothing computed is redone or lost
    again = snakemake("-n", "--configfile", str(a.parent / f"{a.name}.yaml"))
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_adding_a_model_plans_only_its_infer_jobs_and_what_depends_on_it(demo_run, tmp_path):
    """One new cls model: its infer jobs (one per shard), the cls labels and what is built from them;
    no other model's inference, no det/ins label, nothing upstream."""
    registry = yaml.safe_load((REPO / "config" / "models_demo.yaml").read_text())
    registry["models"].append({"id": "resnet10t_random", "task": "cls", "backend": "timm",
                               "arch": "resnet10t", "weights": "random", "benchmark": 68.3})
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(registry))
    cfg = yaml.safe_load((demo_run.parent / f"{demo_run.name}.yaml").read_text())
    cfg["infer"]["registry"] = str(tmp_path / "models.yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    expected = {"infer": 2, "label": 2, "export_labels_cls": 1, "validate": 1, "validation_table": 1,
                "train": 1,  # the cls run; the det run's labels did not change
                "evaluate_run": 2,  # both runs are evaluated on the cls val set
                "evaluate_baselines": 1, "evaluate_report": 1, "report": 1, "all": 1}
    expected["total"] = sum(expected.values())
    assert counts == expected, proc.stdout[-3000:]
    assert proc.stdout.count("group=resnet10t_random") == 2
    assert "task=det" not in proc.stdout and "task=ins" not in proc.stdout


def test_changing_how_jobs_run_reruns_nothing(demo_run, tmp_path):
    """Threads, decode workers and resources change how a job runs, not what it computes."""
    cfg = yaml.safe_load((demo_run.parent / f"{demo_run.name}.yaml").read_text())
    cfg["infer"]["workers"] = 3
    cfg["infer"]["threads"] = 1
    cfg["train"]["workers"] = 2
    cfg["evaluate"]["workers"] = 2
    cfg["select"]["imagenet"]["threads"] = 1
    for stage in ("distort", "label", "infer", "train"):
        cfg[stage]["resources"] = {"mem_mb": 12345, "runtime": 77}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_the_demo_report_shows_every_section_and_flags_unreal_labels(demo_run):
    import re

    page = (demo_run / "report" / "index.html").read_text()
    for section in ("Distortions", "Labels (MMOS)", "Consistency vs accuracy (paper Fig. 4)",
                    "MMOS by (ROI, background) level per corruption (paper Fig. 6)",
                    "Label validation (paper Table 4)", "Train / val splits", "RA-MIQA and baselines: training",
                    "Evaluation (paper Tables 5-8, Figs. 8-9)"):
        assert f">{section}</h" in page, section
    assert "retinanet_r50, fcos_r50 have random weights" in page and "NOT real" in page
    assert page.count("data:image/png;base64,") >= 10  # self-contained: every figure embedded
    assert page.count("<img ") == page.count("<figcaption>")  # every figure captioned
    assert sorted(p.name for p in (demo_run / "report").iterdir()) == ["index.html"]
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "NaN" not in text and "<nav class='contents'>" in text
    assert len(re.findall(r"<h\d>Evaluation", text)) == 1  # one heading, not the page's and report.md's
    # provenance: the config file the workflow was given, the code, the label models
    assert f"{demo_run.parent / (demo_run.name + '.yaml')} (sha256 " in text  # the fixture's config file
    assert "<dt>Code</dt><dd>git commit " in text or "<dt>Code</dt><dd>miqd " in text  # a checkout, or installed
    assert "<dt>Label models</dt><dd>cls: " in text


def test_miqd_score_rates_the_demo_images_with_the_trained_model(demo_run):
    proc = subprocess.run([sys.executable, "-m", "miqd", "score", str(demo_run / "demo_sources" / "imagenet"),
                           "--checkpoint", str(demo_run / "train" / "ra_miqa_cls_composite" / "model.pt"),
                           "--format", "csv"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln.split(",") for ln in proc.stdout.strip().splitlines()]
    assert len(rows) == 7 and all(0.0 <= float(r[rows[0].index("score")]) <= 1.5 for r in rows[1:])
    assert "seeded random initialisation" in proc.stderr  # the demo's backbone is said to be random


def test_published_config_plans_training_only(tmp_path):
    """config/published.yaml: no sources to regenerate, so only train, evaluate and report jobs."""
    cfg = yaml.safe_load((REPO / "config" / "published.yaml").read_text())
    over = tmp_path / "paths.yaml"
    over.write_text(yaml.safe_dump({"outdir": str(tmp_path / "out"),
                                    "train": {"published": {"root": str(tmp_path / "MIQD-2.5M")}}}))
    proc = snakemake("-n", "--configfile", str(REPO / "config" / "published.yaml"), str(over))
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = len(cfg["train"]["runs"])
    assert job_counts(proc.stdout) == {"train": n, "evaluate_run": n, "evaluate_baselines": 3,
                                       "evaluate_report": 1, "report": 1, "all": 1, "total": 2 * n + 6}
