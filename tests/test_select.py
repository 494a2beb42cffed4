"""The select stage: combining NR-IQA scores, ranking, ties and k; pyiqa metrics from local
weights; the COCO filter; the error paths (missing weights, unreadable image, short class)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import DEMO
from miqd import nriqa, select, sources
from miqd.config import validate
from miqd.errors import ConfigError
from miqd.errors import InputError
from miqd.io import read_image

# ---------------------------------------------------------------------------------------------
# combining, ranking, top k (pure)


def test_combine_rules_normalise_within_each_group():
    scores = pd.DataFrame({"a": [0.2, 0.4, 0.9, 5.0, 5.0], "b": [30.0, 10.0, 20.0, 1.0, 2.0]})
    groups = pd.Series([1, 1, 1, 2, 2])
    lower = {"a": False, "b": True}  # b: lower is better -> oriented -30, -10, -20 | -1, -2
    # group 1: a ranks 0, .5, 1 and b 0, 1, .5; group 2: a tied (1, 1), b ranks 1, 0
    rank = select.combine_scores(scores, lower, groups, "rank_mean")
    np.testing.assert_allclose(rank, [0.0, 0.75, 0.75, 1.0, 0.5])
    minmax = select.combine_scores(scores, lower, groups, "minmax_mean")
    np.testing.assert_allclose(minmax, [(0 + 0) / 2, (2 / 7 + 1) / 2, (1 + 0.5) / 2, 1.0, 0.5])
    raw = select.combine_scores(scores, lower, groups, "raw_mean", {"a": 3.0})
    np.testing.assert_allclose(raw, (3 * scores.a - scores.b) / 4)
    with_nan = scores.copy()
    with_nan.loc[1, "a"] = np.nan
    combined = select.combine_scores(with_nan, lower, groups, "rank_mean")
    assert np.isnan(combined[1]) and combined[0] == pytest.approx(0.0) and combined[2] == pytest.approx(0.75)


def test_rank_breaks_ties_by_image_id_and_puts_missing_scores_last():
    score = pd.Series([0.5, 0.9, 0.5, np.nan, 0.7, 0.5])
    groups = pd.Series(["x", "x", "x", "x", "y", "y"])
    ids = pd.Series(["c", "d", "a", "b", "f", "e"])
    rank = select.rank_in_groups(score, groups, ids)
    assert rank.tolist() == [3, 1, 2, 4, 1, 2]
    assert select.top_k(rank, 2).tolist() == [False, True, True, False, True, True]
    # the same rows in another order rank the same
    perm = [5, 3, 1, 0, 4, 2]
    again = select.rank_in_groups(score[perm].reset_index(drop=True), groups[perm].reset_index(drop=True),
                                  ids[perm].reset_index(drop=True))
    assert again.tolist() == [rank[i] for i in perm]


def test_batches_hold_one_image_size_in_a_fixed_order():
    sizes = [(500, 375), (375, 500), (500, 375), (500, 375), (640, 480)]
    ids = ["e", "d", "c", "b", "a"]
    assert select.size_batches(sizes, ids, 2) == [[3, 2], [0], [4], [1]]  # by (height, width, id)


# ---------------------------------------------------------------------------------------------
# the stage on real photos with PIQE (no weights: runs offline for real)


@pytest.fixture(scope="module")
def small_imagenet(demo_dirs, tmp_path_factory):
    """3 classes x 3 images cut from the demo photos (sizes vary; one grayscale), in upstream format."""
    root = tmp_path_factory.mktemp("small_imagenet")
    photos = sorted(demo_dirs["imagenet"].glob("*.png"))
    lines, n = [], 0
    for c, cls in enumerate((7, 8, 9)):
        for j in range(3):
            n += 1
            im = Image.open(photos[(3 * c + j) % len(photos)]).convert("RGB")
            im = im.crop((0, 0, 200 + 40 * (j % 2), 160))
            if n == 5:
                im = im.convert("L")
            im.save(root / f"img_{n:08d}.png")
            lines.append(f"{cls},class {cls}")
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    return root


def _config(root, **select_cfg):
    cfg = {"sources": {"imagenet": {"images": str(root), "ground_truth": str(root / "gt.txt"),
                                    "filename_template": "img_{index:08d}.png", "shards": 1}},
           "select": {"imagenet": {"method": "top_k", "k": 2, "metrics": [{"name": "piqe"}],
                                   "device": "cpu", **select_cfg}}}
    return validate(cfg, whole_workflow=False)


def test_top_k_by_piqe_scores_every_candidate_and_keeps_the_best(small_imagenet, tmp_path):
    import pyiqa
    import torch

    table = select.run(_config(small_imagenet, batch_size=2), "imagenet", 0, str(tmp_path / "s.parquet"))
    back = pd.read_parquet(tmp_path / "s.parquet")
    assert back.columns.tolist() == select.SELECT_SCHEMA.names + ["score_piqe"]
    assert len(back) == 9 and back.class_index.tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9]
    assert back.loc[4, "mode"] == "L"  # grayscale: converted and scored, not dropped
    # each score equals pyiqa's PIQE on that image alone (batching changes nothing)
    reference = pyiqa.create_metric("piqe", device="cpu")
    for row in back.itertuples():
        x = torch.from_numpy(read_image(row.path)).permute(2, 0, 1)[None].float() / 255
        assert row.score_piqe == pytest.approx(float(reference(x)), rel=1e-5)
    # lower PIQE is better: per class the two lowest are selected
    for _, cls in back.groupby("class_index"):
        best = cls.sort_values(["score_piqe", "image_id"]).image_id.tolist()[:2]
        assert sorted(cls[cls.selected].image_id) == sorted(best)
        assert cls.sort_values("rank").image_id.tolist() == cls.sort_values("score_piqe").image_id.tolist()
    assert back.selected.sum() == 6 and table.shape[0] == 9
    # the same config writes the same bytes
    select.run(_config(small_imagenet, batch_size=2), "imagenet", 0, str(tmp_path / "again.parquet"))
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "s.parquet").read_bytes()


def test_a_class_with_fewer_than_k_candidates_is_an_error(small_imagenet, tmp_path):
    with pytest.raises(InputError, match=r"class 7 \(class 7\) has 3 candidate\(s\), fewer than select k=4"):
        select.run(_config(small_imagenet, k=4), "imagenet", 0, str(tmp_path / "s.parquet"))
    assert not (tmp_path / "s.parquet").exists()


def test_an_unreadable_image_is_named(small_imagenet, tmp_path):
    bad = tmp_path / "imgs"
    bad.mkdir()
    for p in small_imagenet.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "img_00000003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match=r"image .*img_00000003\.png cannot be (read|decoded)"):
        select.run(_config(bad), "imagenet", 0, str(tmp_path / "s.parquet"))
    (bad / "img_00000003.png").unlink()
    with pytest.raises(InputError, match=r"image .*img_00000003\.png does not exist"):
        select.run(_config(bad), "imagenet", 0, str(tmp_path / "s.parquet"))


def test_coco_keeps_every_annotated_image_and_records_scores(demo_dirs, tmp_path):
    # val2017's shape: 5,000 images, 48 without annotations -> 4,952 candidates
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in range(1, 5001)]
    empty = set(list(range(7, 5001, 104))[:48])
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 3, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0,
             "segmentation": [[0, 0, 1, 0, 1, 1]]} for i in range(1, 5001) if i not in empty]
    (tmp_path / "val.json").write_text(json.dumps({"images": images, "annotations": anns}))
    cands = sources.coco_candidates({"images": "x", "annotations": str(tmp_path / "val.json")})
    assert len(cands) == 4952 and not set(cands.coco_id) & empty
    assert sum(len(sources.shard_members("coco", cands, 100, k)) for k in range(100)) == 4952

    cfg = validate({"sources": {"coco": {"images": str(demo_dirs["coco"]),
                                         "annotations": str(DEMO / "coco" / "instances_demo.json"),
                                         "shards": 1}},
                    "select": {"coco": {"method": "all", "metrics": [{"name": "piqe"}], "device": "cpu"}}},
                   whole_workflow=False)
    table = select.run(cfg, "coco", 0, str(tmp_path / "c.parquet"))
    assert table.selected.all() and table.score_piqe.notna().all()
    assert table["rank"].tolist() == list(table.score_piqe.rank(method="first").astype(int))


# ---------------------------------------------------------------------------------------------
# learned metrics from local files (random weights saved by the test, loaded like real ones)


@pytest.fixture(scope="module")
def hyperiqa_checkpoint(tmp_path_factory):
    import pyiqa
    import torch

    torch.manual_seed(0)
    with nriqa._backbones_without_download():
        metric = pyiqa.create_metric("hyperiqa", device="cpu", pretrained=False, num_crop=1)
    path = tmp_path_factory.mktemp("iqa") / "hyperiqa.pth"
    torch.save({"params": {f"module.{k}": v for k, v in metric.net.state_dict().items()}}, path)
    return path, metric.eval()


def test_hyperiqa_loads_a_local_checkpoint_backbone_included(hyperiqa_checkpoint, small_image):
    import torch

    path, reference = hyperiqa_checkpoint
    metric = nriqa.create_metric("hyperiqa", {"file": str(path)}, "cpu", {"num_crop": 1}, key="k")
    assert not metric.lower_better
    x = torch.from_numpy(np.stack([small_image, small_image[::-1]])).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        expected = reference(x).reshape(-1).numpy()
    np.testing.assert_allclose(metric.scores(x), expected, rtol=1e-5)
    # every backbone tensor comes from the file: the ResNet-50 weights equal the saved ones
    saved = torch.load(path, weights_only=True)["params"]
    torch.testing.assert_close(metric.model.net.base_model.state_dict()["conv1.weight"],
                               saved["module.base_model.conv1.weight"])


def test_missing_or_unfitting_weights_are_clear_errors(hyperiqa_checkpoint, tmp_path, small_imagenet):
    path, _ = hyperiqa_checkpoint
    with pytest.raises(InputError, match=r"k: weights file .*nope\.pth of maniqa does not exist; download "
                                         r"ckpt_koniq10k\.pt from https://huggingface\.co/chaofengc"):
        nriqa.create_metric("maniqa", {"file": str(tmp_path / "nope.pth")}, key="k")
    # MANIQA (and its ViT-B/8 backbone) is built offline; a checkpoint of another network is named
    with pytest.raises(InputError, match=r"k: checkpoint .*hyperiqa\.pth does not fit maniqa \(\d+ missing keys"):
        nriqa.create_metric("maniqa", {"file": str(path)}, key="k")
    # in the stage: the job stops before scoring, naming the config key
    cfg = _config(small_imagenet, metrics=[{"name": "hyperiqa", "weights": {"file": str(tmp_path / "w.pth")}}])
    with pytest.raises(InputError, match=r"select\.imagenet\.metrics\[0\] \(hyperiqa\): weights file .*w\.pth"):
        select.run(cfg, "imagenet", 0, str(tmp_path / "s.parquet"))


def test_hub_weights_fail_with_the_offline_fix(monkeypatch, tmp_path):
    import urllib.error

    import pyiqa.utils.download_util as download

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download, "DEFAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(download, "download_url_to_file", offline)
    with pytest.raises(InputError, match=r"k: weights: hub could not fetch HyperIQA-resnet50-koniq10k-c96c41b1\.pth "
                                         r"\(URLError.*set weights: \{file: <path>\}"):
        nriqa.create_metric("hyperiqa", "hub", key="k")


@pytest.mark.parametrize(
    "select_cfg, message",
    [
        ({"metrics": [{"name": "brisqe"}]}, r"select\.imagenet\.metrics\[0\]\.name: unknown NR-IQA metric "
                                            r"'brisqe'; known: piqe, hyperiqa, maniqa"),
        ({"metrics": [{"name": "piqe", "weights": "hub"}]}, r"metrics\[0\]\.weights: metric 'piqe' has no learned"),
        ({"metrics": [{"name": "piqe"}, {"name": "piqe"}]}, r"metrics\[1\]: metric 'piqe' is listed twice"),
        ({"metrics": []}, r"select\.imagenet\.metrics: method top_k ranks by NR-IQA scores"),
        ({"combine": {"weights": {"maniqa": 2}}}, r"combine\.weights: maniqa is not one of the metrics \(piqe\)"),
        ({"combine": {"rule": "median"}}, r"combine\.rule: 'median' is not one of"),
    ],
)
def test_invalid_select_configs_name_the_key(small_imagenet, select_cfg, message):
    with pytest.raises(ConfigError, match=message):
        _config(small_imagenet, **select_cfg)


def test_top_k_needs_classes(small_imagenet):
    with pytest.raises(ConfigError, match=r"select\.coco\.method: top_k keeps the best k per class and coco has no"):
        validate({"select": {"coco": {"method": "top_k", "metrics": [{"name": "piqe"}]}}}, whole_workflow=False)
    cfg = validate({"select": {"imagenet": {"method": "top_k", "metrics": [{"name": "hyperiqa"}]}}},
                   whole_workflow=False)
    assert cfg["select"]["imagenet"]["metrics"][0]["weights"] == "hub"  # pyiqa's download is the default


def test_gpu_scores_equal_cpu_scores(hyperiqa_checkpoint, small_image):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU path (select.<dataset>.device) runs where one exists")
    path, _ = hyperiqa_checkpoint
    x = torch.from_numpy(np.stack([small_image] * 3)).permute(0, 3, 1, 2).float() / 255
    for name, weights, options in (("piqe", None, None), ("hyperiqa", {"file": str(path)}, {"num_crop": 1})):
        cpu = nriqa.create_metric(name, weights, "cpu", options).scores(x)
        gpu = nriqa.create_metric(name, weights, "cuda", options).scores(x)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
