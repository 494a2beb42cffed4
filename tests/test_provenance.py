"""Predictions stay bound to the exact images they came from, through the workflow's own reruns.

The scenario that let stale predictions through: in a finished run, change the blend, swap two
ground-truth lines, change a shard count; each time the workflow must recompute exactly the
predictions whose images changed, keep the rest, and leave no row of an image that is not (or no
longer) the shard's.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from helpers import REPO, demo_config, job_counts, snakemake
from miqd import layout
from miqd.models import infer

REGISTRY = {"models": [
    {"id": "tiny_cls", "task": "cls", "backend": "timm", "arch": "resnet10t", "weights": "random", "benchmark": 60.0,
     "preprocess": {"size": 64, "resize": 72}},
    {"id": "tiny_det", "task": "det", "backend": "torchvision", "arch": "fcos_resnet50_fpn", "weights": "random",
     "preprocess": {"size": 64}, "score_threshold": 0.0, "max_detections": 10, "benchmark": 39.2},
]}


def _check_current(outdir, cfg) -> None:
    """Every prediction file holds one row per image of its shard now, with that file's hash."""
    for task, dataset in (("cls", "imagenet"), ("det", "coco")):
        for shard in layout.shard_ids(cfg["sources"][dataset]["shards"]):
            images = infer.shard_images(layout.select_table(str(outdir), dataset, shard),
                                        layout.distort_manifest(str(outdir), dataset, shard), str(outdir))
            want = list(zip(images.image_id, images.corruption, images.roi_level, images.bg_level, images.sha256))
            model = f"tiny_{task}"
            got = pd.read_parquet(layout.predictions(str(outdir), task, model, shard))
            assert list(zip(got.image_id, got.corruption, got.roi_level, got.bg_level, got.sha256)) == want, \
                f"{task} shard {shard}: stale or missing rows"


def _predicted(outdir) -> dict[str, int]:
    """{infer log: images predicted} from the infer logs' "N of M images to predict" lines."""
    out = {}
    for log in sorted((outdir / "logs" / "infer").glob("*.log")):
        m = re.search(r"tiny_\w+: (\d+) of (\d+) images to predict", log.read_text())
        out[log.stem] = int(m[1])
    return out


@pytest.mark.slow
def test_a_rerun_recomputes_exactly_the_predictions_whose_images_changed(tmp_path):
    outdir = tmp_path / "out"
    path = demo_config(outdir)
    cfg = yaml.safe_load(path.read_text())
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(REGISTRY))
    gt = tmp_path / "ground_truth.txt"
    gt.write_text((REPO / cfg["sources"]["imagenet"]["ground_truth"]).read_text())
    cfg["sources"]["imagenet"]["ground_truth"] = str(gt)
    cfg["infer"]["registry"] = str(tmp_path / "models.yaml")
    cfg["distort"]["corruptions"] = ["contrast"]
    cfg["select"] = {"imagenet": {"method": "all"}, "coco": {"method": "all"}}
    cfg["train"]["runs"] = []
    cfg["evaluate"]["tasks"] = []
    cfg["distort"]["threads"] = cfg["infer"]["threads"] = 1  # its jobs are small: two at a time
    targets = ["labelled"]

    def run():
        path.write_text(yaml.safe_dump(cfg))
        proc = snakemake(*targets, "--cores", "2", "--configfile", str(path))
        assert proc.returncode == 0, proc.stderr[-4000:]

    run()
    _check_current(outdir, cfg)
    first = _predicted(outdir)
    assert all(n == 26 * k for n, k in zip(first.values(), [3, 3, 3], strict=True))  # 3 sources x (1 + 25)

    # 0. a PNG deleted and another truncated: their shards are rebuilt, byte for byte, and their
    #    infer jobs rerun and find nothing to predict (the images' hashes are the same again)
    _damage_and_rebuild(outdir, path, run, targets)
    _check_current(outdir, cfg)
    after = _predicted(outdir)
    assert [after["cls-tiny_cls-001"], after["det-tiny_det-000"]] == [0, 0]

    # 1. a new blend: the 20 mixed images of every source change, the 5 uniform ones do not
    cfg["distort"]["blend"] = {"kernel": 33}
    run()
    _check_current(outdir, cfg)
    assert set(_predicted(outdir).values()) == {3 * 20}

    # 2. two ground-truth lines swapped: two images change class, and with it shard (classes are
    #    blocked into shards), their predictions follow their images
    lines = gt.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # 281 tabby (shard 0) <-> 967 espresso (shard 1)
    gt.write_text("\n".join(lines) + "\n")
    run()
    _check_current(outdir, cfg)
    after = _predicted(outdir)
    assert [after["cls-tiny_cls-000"], after["cls-tiny_cls-001"]] == [26, 26]  # one image moved each way

    # 3. a shard count changes what every COCO shard holds
    cfg["sources"]["coco"]["shards"] = 2
    run()
    _check_current(outdir, cfg)


def _damage_and_rebuild(outdir, path, run, targets) -> None:
    images = sorted((outdir / "miqa_cls" / "images").rglob("*.png")) + sorted((outdir / "miqa_det").rglob("*.png"))
    before = {p: p.read_bytes() for p in images}
    shard_of = {}  # which shard's seal lists each file
    for seal in sorted((outdir / "distort").rglob("shard-*.files.tsv")):
        for line in seal.read_text().splitlines():
            shard_of[outdir / line.split("\t")[0]] = seal.parent.name + "-" + seal.name[6:9]
    assert set(before) <= set(shard_of)  # every PNG is sealed
    cls_png = next(p for p in images if shard_of[p] == "imagenet-001")
    det_png = next(p for p in images if shard_of[p] == "coco-000")
    cls_png.unlink()  # deleted
    det_png.write_bytes(before[det_png][:100])  # truncated

    plan = snakemake("-n", *targets, "--configfile", str(path))
    text = plan.stdout + plan.stderr
    assert plan.returncode == 0, text[-3000:]
    assert "distort imagenet shard 001: 1 of its files are missing or changed size" in text
    assert f"(first: {cls_png.relative_to(outdir).as_posix()})" in text
    assert "distort coco shard 000: 1 of its files are missing or changed size" in text
    assert job_counts(text).get("distort") == 2, text[-3000:]  # those two shards, not imagenet-000

    run()
    assert {p: p.read_bytes() for p in images} == before  # rebuilt byte for byte
    again = snakemake("-n", *targets, "--configfile", str(path))
    assert "Nothing to be done" in again.stdout + again.stderr
