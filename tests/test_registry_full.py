"""The full-scale registry (config/models.yaml): the paper's 75 models, each a real implementation.

No weights are needed: names are checked against the installed libraries, `miqd models check`
runs without weights (it must fail fast and name every gap) and with random-init checkpoints
written where the registry's loaders look for the real ones (it must pass).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from miqd.models.coco import COCO_CATEGORIES
from miqd.models.registry import groups, load_registry

REGISTRY = REPO / "config" / "models.yaml"
PAPER_MODELS = REPO / "resources" / "upstream" / "paper_models.csv"


@pytest.fixture(scope="module")
def specs():
    return load_registry(REGISTRY)


def _paper_rows() -> list[tuple[str, str, float]]:
    with PAPER_MODELS.open(newline="") as f:
        return [(r["task"], r["paper_name"], float(r["score"])) for r in csv.DictReader(f)]


def test_registry_is_the_papers_75_models_row_for_row(specs):
    assert [(s.task, s.paper_name, s.benchmark) for s in specs] == _paper_rows()
    assert [sum(s.task == t for s in specs) for t in ("cls", "det", "ins")] == [40, 20, 15]
    assert len({s.id for s in specs}) == 75


def test_groups_never_mix_tasks_and_are_a_few_gpu_jobs_per_task(specs):
    by_group = groups(specs)  # raises if a group mixes tasks
    for (task, _), members in by_group.items():
        assert {m.task for m in members} == {task}
        assert len({m.backend for m in members}) == 1  # one library per GPU job
    per_task = {t: sum(k[0] == t for k in by_group) for t in ("cls", "det", "ins")}
    assert per_task == {"cls": 4, "det": 4, "ins": 3}


def test_every_model_has_real_weights_from_its_publisher(specs):
    assert {s.backend for s in specs} == {"timm", "ultralytics", "mmdet"}  # no torchvision match
    for s in specs:
        assert not s.random_weights, s.id
        if s.backend == "timm":
            assert s.weights == {"hub": f"timm/{s.arch}"}, s.id
        elif s.backend == "ultralytics":
            assert s.weights["url"].startswith("https://github.com/ultralytics/assets/releases/download/"), s.id
        else:
            assert s.weights["url"].startswith("https://download.openmmlab.com/mmdetection/"), s.id
            assert s.weights["pickled"] is True, s.id  # mmdet checkpoints hold pickled metadata
        if s.task != "cls":
            assert s.score_threshold == 0.05


def test_timm_entries_are_known_architectures_with_imagenet_1k_pretrained_tags(specs):
    import timm
    from timm.models import get_pretrained_cfg

    pretrained = set(timm.list_pretrained())
    for s in (s for s in specs if s.backend == "timm"):
        name, _, tag = s.arch.partition(".")
        assert tag, f"{s.id}: arch {s.arch!r} has no pretrained tag"
        assert timm.is_model(name), f"{s.id}: timm has no architecture {name!r}"
        assert s.arch in pretrained, f"{s.id}: timm has no pretrained weights {s.arch!r}"
        cfg = get_pretrained_cfg(s.arch)
        assert cfg.num_classes == 1000, s.id
        if s.preprocess:  # only where the published top-1 was measured at the tag's test size
            assert s.preprocess["size"] == cfg.test_input_size[-1] != cfg.input_size[-1], s.id


def test_ultralytics_entries_are_official_assets_with_a_packaged_yaml(specs):
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    for s in (s for s in specs if s.backend == "ultralytics"):
        model_yaml = yaml_model_load(s.arch)  # raises if the installed package has no such yaml
        if "scales" in model_yaml:  # a family yaml (yolo11.yaml): the name must pick one of its scales
            assert model_yaml["scale"] in model_yaml["scales"], s.id
        asset = Path(s.weights["url"]).name
        assert asset == s.arch.replace(".yaml", ".pt") and asset in GITHUB_ASSETS_NAMES, s.id
        assert ("-seg" in s.arch) == (s.task == "ins"), s.id
        assert s.label_map is None  # official checkpoints carry COCO's class names


MMDET_ENTRIES = [s for s in load_registry(REGISTRY) if s.backend == "mmdet"]


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is None,
                    reason="mmdet is not installed (optional extra): its bundled configs cannot be listed")
@pytest.mark.parametrize("spec", MMDET_ENTRIES, ids=[s.id for s in MMDET_ENTRIES])
def test_mmdet_config_exists_in_the_installed_package(spec):
    from miqd.models.backends.mmdet_backend import config_path

    if spec.arch.startswith("projects/"):
        pytest.skip(f"{spec.arch} is in mmdetection's projects/, which the mmdet wheel does not ship; "
                    f"`miqd models fetch` brings it (tests/test_fetch.py checks that path offline)")
    assert config_path(spec).is_file()


def _run_check(registry: Path, weights: Path, hub: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MIQD_WEIGHTS=str(weights), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1",
               YOLO_CONFIG_DIR=str(weights.parent / "yolo"))
    return subprocess.run([sys.executable, "-m", "miqd", "models", "check", "--registry", str(registry)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_check_without_weights_fails_before_building_and_names_every_gap(tmp_path):
    proc = _run_check(REGISTRY, tmp_path / "weights", tmp_path / "hub")
    out = proc.stdout
    assert proc.returncode == 2, out + proc.stderr
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip() and " ERROR: " in line}
    assert len(lines) == 75
    assert ("model 'resnet50': hub weights timm/resnet50.a1_in1k are not in the local hub cache; run "
            "`miqd models fetch`") in lines["resnet50"]
    assert (f"model 'yolo11m': weights file {tmp_path / 'weights' / 'yolo11m.pt'} does not exist; run "
            f"`miqd models fetch` where the internet is reachable (it downloads "
            f"https://github.com/ultralytics/assets/releases/download/v8.4.0/yolo11m.pt)") in lines["yolo11m"]
    assert "model 'co_detr_r50': weights file " in lines["co_detr_r50"]
    assert "co_dino_5scale_lsj_r50_3x_coco-fe5a6829.pth does not exist" in lines["co_detr_r50"]
    if importlib.util.find_spec("mmdet") is None:
        assert "model 'co_detr_r50': backend mmdet needs" in lines["co_detr_r50"]
    for model in ("vitdet_b_det", "vitdet_b_ins", "co_detr_r50", "mask_rcnn_convnextv2_b"):  # sources not fetched
        assert "is in mmdetection's projects/ folder, which the mmdet wheel does not ship" in lines[model], model
        assert f"run `miqd models fetch --registry <this registry>`" in lines[model]
    assert "0 of 75 models have their weights and backend" in out
    assert "nothing was built" in out


def _hub_snapshot(hub: Path, repo_id: str, filename: str) -> Path:
    """Where huggingface_hub's cache keeps `filename` of `repo_id` at revision main."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    path = repo / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    return path


def test_check_passes_when_the_weights_are_where_the_registry_looks(tmp_path, monkeypatch):
    """Random-init checkpoints of the smallest timm and ultralytics entries, written in the formats
    `miqd models fetch` leaves (hub cache safetensors, an ultralytics .pt with COCO class names)."""
    import timm
    from safetensors.torch import save_file
    from ultralytics import YOLO

    full = yaml.safe_load(REGISTRY.read_text())
    chosen = {"deit_tiny", "yolov9s"}
    entries = [m for m in full["models"] if m["id"] in chosen]
    assert {m["id"] for m in entries} == chosen
    weights, hub = tmp_path / "weights", tmp_path / "hub"

    deit = next(m for m in entries if m["id"] == "deit_tiny")
    torch.manual_seed(0)
    state = timm.create_model(deit["arch"], pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()},
              str(_hub_snapshot(hub, deit["weights"]["hub"], "model.safetensors")))

    yolo = next(m for m in entries if m["id"] == "yolov9s")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    model = YOLO(yolo["arch"])
    model.model.names = {i: name for i, (_, name) in enumerate(COCO_CATEGORIES)}
    weights.mkdir()
    model.save(str(weights / Path(yolo["weights"]["url"]).name))

    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    proc = _run_check(registry, weights, hub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 models ready" in proc.stdout
    for model_id in chosen:
        line = next(line for line in proc.stdout.splitlines() if line.startswith(model_id))
        assert line.rstrip().endswith(" ok"), line
