"""Co-segmentation: the pure steps on synthetic inputs with a known answer, the ViT features
against timm's own forward pass, and the coseg ROI method end to end with a random-weight ViT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans

from miqd import roi
from miqd.config import validate
from miqd.errors import ConfigError
from miqd.errors import InputError
from miqd.io import read_mask, write_table
from miqd.roi import coseg
from miqd.select import SELECT_SCHEMA

# ---------------------------------------------------------------------------------------------
# pure steps


def _blobs(rng, n_per, centres, noise):
    x = np.concatenate([c + noise * rng.standard_normal((n_per, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


def _same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_blobs_as_well_as_sklearn():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 3
    x, truth = _blobs(rng, 50, centres, 0.3)
    centroids, inertia = coseg.kmeans(x, 4, np.random.default_rng(1), restarts=5)
    labels, dist = coseg.assign(x, centroids)
    assert _same_partition(labels, truth)
    assert inertia == pytest.approx(dist.sum())
    reference = KMeans(4, n_init=10, random_state=0).fit(x)
    assert inertia <= reference.inertia_ * (1 + 1e-9)
    # the same random stream gives the same answer
    again, _ = coseg.kmeans(x, 4, np.random.default_rng(1), restarts=5)
    np.testing.assert_array_equal(again, centroids)


def test_elbow_rule_keeps_the_first_k_that_stops_improving():
    rng = np.random.default_rng(2)
    centres = np.eye(64)[:3] * 4
    x, truth = _blobs(rng, 300, centres, 0.2)
    x = coseg.l2_normalize(x)
    labels, k, curve = coseg.elbow_kmeans(x[::5], x, np.random.default_rng(3), elbow=0.975,
                                          max_clusters=10, restarts=3)
    # three planted directions: k=3 explains them; k=4 improves by < 2.5 %, so the loop stops there
    assert k == 4 and len(curve) == 4
    assert curve[3] > 0.975 * curve[2] and all(curve[i] <= 0.975 * curve[i - 1] for i in (1, 2))
    # the curve is the mean squared distance of every descriptor to its centroid (fitted on the
    # sample, so at least that of the partition's own means, and close to it)
    means = np.stack([x[labels == c].mean(0) for c in range(k)])
    best = ((x - means[labels]) ** 2).sum(1).mean()
    assert best - 1e-12 <= curve[-1] <= 1.05 * best
    # splitting one planted cluster in two keeps the other two intact
    for c in range(3):
        assert len(set(labels[truth == c])) in (1, 2)
    assert len({frozenset(labels[truth == c]) for c in range(3)}) == 3


def test_votes_need_the_percentage_of_images_and_a_saliency_above_the_threshold():
    labels = [np.array([0, 0, 1, 1, 2]) for _ in range(5)]
    sal = []
    for i in range(5):
        s = np.array([0.0, 0.0, 0.5, 0.5, 0.0])
        if i < 3:
            s[4] = 0.9  # cluster 2 salient in 3 of 5 images: below 75 %
        if i == 4:
            s[2:4] = 0.065  # exactly at the threshold is not above it: cluster 1 salient in 4 of 5
        sal.append(s)
    assert coseg.vote_salient(labels, sal, 3, 0.065, 75).tolist() == [1]
    assert coseg.vote_salient(labels, sal, 3, 0.065, 60).tolist() == [1, 2]
    assert coseg.vote_salient(labels, sal, 3, 0.065, 100).tolist() == []
    # a cluster absent from an image gets no vote there (no mean of nothing)
    assert coseg.vote_salient([np.array([0, 0])], [np.array([0.9, 0.9])], 2, 0.065, 75).tolist() == [0]


def _planted_group(rng, shapes, boxes, dim=32):
    """Descriptors: sky (top) and ground (bottom) backgrounds, a foreground box; saliency high on
    the box, plus a distractor salient background patch in one image only."""
    directions = np.linalg.qr(rng.standard_normal((dim, 3)))[0].T * 5
    descs, sals, truth = [], [], []
    for i, ((h, w), (t, l, b, r)) in enumerate(zip(shapes, boxes, strict=True)):
        kind = np.zeros((h, w), int)
        kind[h // 2:] = 1
        kind[t:b, l:r] = 2
        d = directions[kind.reshape(-1)] + 0.4 * rng.standard_normal((h * w, dim))
        s = np.where(kind == 2, 0.8, 0.02) + 0.02 * rng.random((h, w))
        if i == 0:
            s[: h // 4] = 0.9  # the sky is salient in this image only
        descs.append(d.astype(np.float32))
        sals.append(s.reshape(-1))
        truth.append((kind == 2).reshape(-1))
    return descs, sals, truth


def test_cosegment_finds_the_planted_common_foreground():
    rng = np.random.default_rng(4)
    shapes = [(20, 30), (24, 24), (18, 32), (22, 28), (20, 20)]
    boxes = [(4, 6, 14, 20), (8, 2, 20, 12), (2, 10, 12, 30), (10, 10, 20, 26), (5, 5, 15, 15)]
    descs, sals, truth = _planted_group(rng, shapes, boxes)
    result = coseg.cosegment(descs, sals, coseg.CosegParams(sample_interval=7), np.random.default_rng(5))
    assert result.n_clusters >= 3
    for fg, t in zip(result.foreground, truth, strict=True):
        np.testing.assert_array_equal(fg, t)
    # one image alone: the sky distractor is salient in 100 % of the set, so it joins the foreground
    alone = coseg.cosegment(descs[:1], sals[:1], coseg.CosegParams(sample_interval=7), np.random.default_rng(5))
    assert alone.foreground[0][: 5 * 30].all()


def test_grid_to_pixels_maps_tokens_to_the_pixels_they_cover():
    grid = np.arange(12).reshape(3, 4)
    # non-overlapping patches at the load size: every pixel takes its own patch's token
    same = coseg.grid_to_pixels(grid, (24, 32), (24, 32), patch=8, stride=8)
    np.testing.assert_array_equal(same, np.kron(grid, np.ones((8, 8), int)))
    # the image is twice the load size: each token covers 16 x 16 source pixels
    double = coseg.grid_to_pixels(grid, (48, 64), (24, 32), patch=8, stride=8)
    np.testing.assert_array_equal(double, np.kron(grid, np.ones((16, 16), int)))
    # overlapping patches (stride 4): token i is centred on load pixel 4 i + 3.5
    g = np.zeros((5, 7), bool)
    g[2, 3] = True  # centre (11.5, 15.5) -> pixels 10..13 x 14..17 are nearest to it
    out = coseg.grid_to_pixels(g, (24, 32), (24, 32), patch=8, stride=4)
    ys, xs = np.nonzero(out)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 13, 14, 17)


def _disc_image(rng, h=120, w=160, centre=(60, 85), radius=32):
    yy, xx = np.mgrid[:h, :w]
    truth = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    image = np.empty((h, w, 3), np.uint8)
    image[...] = (40, 140, 90)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    image[truth] = np.clip(np.array([210, 40, 40]) + rng.normal(0, 12, (truth.sum(), 3)), 0, 255)
    return image, truth


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_grabcut_turns_a_blocky_mask_into_the_object():
    rng = np.random.default_rng(6)
    image, truth = _disc_image(rng)
    tokens = coseg.grid_to_pixels(truth[4::8, 4::8], truth.shape, truth.shape, patch=8, stride=8)
    coarse = tokens.astype(bool)
    refined, ok = coseg.grabcut_refine(image, coarse, erode=7, iterations=5, seed=1)
    assert ok
    assert _iou(refined, truth) > 0.97 > _iou(coarse, truth)
    again, _ = coseg.grabcut_refine(image, coarse, erode=7, iterations=5, seed=1)
    np.testing.assert_array_equal(again, refined)
    # without sure background (or sure foreground) there is nothing to fit: unrefined, reported
    for mask in (np.ones_like(truth), np.zeros_like(truth)):
        out, ok = coseg.grabcut_refine(image, mask, erode=7, iterations=5, seed=1)
        assert not ok and np.array_equal(out, mask)
    out, ok = coseg.grabcut_refine(image, coarse, erode=7, iterations=0)
    assert not ok and np.array_equal(out, coarse)


# ---------------------------------------------------------------------------------------------
# ViT features: a random-weight ViT saved to a file, loaded through the real path

ARCH = "vit_tiny_patch16_224"  # 3 heads, 12 blocks, patch 16: fast on a CPU


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False)  # with its classifier head: it is dropped
    folder = tmp_path_factory.mktemp("vit")
    torch.save({"state_dict": model.state_dict()}, folder / "vit.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "vit.safetensors"))
    # a DINO training checkpoint: teacher and student, prefixed, with a projection head
    dino = {f"module.backbone.{k}": v for k, v in model.state_dict().items() if not k.startswith("head.")}
    dino["module.head.mlp.0.weight"] = torch.zeros(8, 192)
    torch.save({"teacher": dino, "student": dino, "epoch": 100}, folder / "dino.pth")
    return folder


def _reference_model(path):
    import timm
    import torch

    model = timm.create_model(ARCH, pretrained=False, num_classes=0, dynamic_img_size=True)
    sd = torch.load(path, weights_only=True)["state_dict"]
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
    for block in model.blocks:
        block.attn.fused_attn = False  # explicit softmax: its output passes through attn_drop
    return model.eval()


def test_descriptors_and_saliency_equal_timms_own_forward(vit_checkpoint, small_image):
    import torch

    from miqd.roi.features import ViTFeatures

    vit = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "vit.pth")})
    ref = _reference_model(vit_checkpoint / "vit.pth")
    x = vit._tensor([small_image], (64, 96))
    seen = {}
    ref.blocks[5].attn.qkv.register_forward_hook(lambda m, i, o: seen.__setitem__("qkv", o))
    ref.blocks[11].attn.attn_drop.register_forward_hook(lambda m, i, o: seen.__setitem__("attn", o))
    with torch.inference_mode():
        ref.forward_features(x)
        desc, grid = vit.descriptors(x, stride=16, layer=5, facet="key")
        sal, sal_grid = vit.saliency(x, [0, 2])
    assert grid == sal_grid == (4, 6)
    key = seen["qkv"].reshape(1, 25, 3, 3, 64)[:, 1:, 1].flatten(2)  # (B, tokens, heads * dim)
    torch.testing.assert_close(desc, key, rtol=1e-5, atol=1e-5)
    cls = seen["attn"][:, [0, 2], 0, 1:].mean(1)
    cls = (cls - cls.min()) / (cls.max() - cls.min())
    torch.testing.assert_close(sal, cls, rtol=1e-5, atol=1e-5)

    # stride 8: overlapping patches, one token every 8 pixels; .safetensors loads the same weights
    vit2 = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "vit.safetensors")})
    feats = vit2.extract([small_image, small_image[:64]], load_size=48, stride=8, layer=11,
                         heads=(0, 1, 2), saliency_scale=0.5)
    # 96x128 -> 48x64 load (stride 8: 5x7 tokens); 64x128 -> 48x96 (5x11 tokens)
    assert [f.load_hw for f in feats] == [(48, 64), (48, 96)]
    assert [f.grid for f in feats] == [(5, 7), (5, 11)]
    assert [f.descriptors.shape for f in feats] == [(35, 192), (55, 192)]
    for f in feats:
        assert f.saliency.shape == (f.grid[0] * f.grid[1],)
        assert f.saliency.min() >= 0 and f.saliency.max() <= 1


def test_vit_errors_name_the_key_and_the_fix(vit_checkpoint, tmp_path):
    import timm
    import torch

    from miqd.roi.features import ViTFeatures

    with pytest.raises(InputError, match=r"k\.model\.weights\.file: .*nope\.pth does not exist; put the ViT"):
        ViTFeatures(ARCH, {"file": str(tmp_path / "nope.pth")}, key="k.model")
    with pytest.raises(InputError, match=r"does not fit vit_small_patch16_224 .*shape mismatch"):
        ViTFeatures("vit_small_patch16_224", {"file": str(vit_checkpoint / "vit.pth")}, key="k")
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "r.pth")
    with pytest.raises(InputError, match=r"k\.arch: resnet10t is not a"):
        ViTFeatures("resnet10t", {"file": str(tmp_path / "r.pth")}, key="k")
    vit = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "vit.pth")}, key="k")
    dino = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "dino.pth")}, key="k")
    for a, b in zip(vit.model.state_dict().values(), dino.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="stride 6 must divide the patch size 16"):
        vit.check(6, 11, [0])
    with pytest.raises(InputError, match=r"saliency_heads \[5\] out of range; the model has 3 heads"):
        vit.check(8, 11, [0, 5])


# ---------------------------------------------------------------------------------------------
# the coseg method of the roi stage


def _coseg_config(tmp_path, checkpoint, dataset="imagenet", **coseg_keys):
    c = {"model": {"arch": ARCH, "weights": {"file": str(checkpoint)}}, "load_size": 48, "stride": 8,
         "saliency_heads": [0, 1, 2], "device": "cpu", **coseg_keys}
    return validate({"outdir": str(tmp_path / "out"), "roi": {dataset: {"method": "coseg", "coseg": c}}},
                    whole_workflow=False)


def test_coseg_stage_writes_pixel_aligned_masks_reproducibly(vit_checkpoint, demo_dirs, tmp_path):
    from PIL import Image

    rows = []
    for i, cls in ((1, 281), (2, 967), (4, 281), (6, 281)):
        path = demo_dirs["imagenet"] / f"demo_val_{i:08d}.png"
        w, h = Image.open(path).size
        rows.append(dict(image_id=path.stem, path=str(path), width=w, height=h, class_index=cls,
                         selected=i != 6))  # an unselected candidate gets no mask
    write_table(tmp_path / "s.parquet", pa.Table.from_pylist(rows, schema=SELECT_SCHEMA))
    cfg = _coseg_config(tmp_path, vit_checkpoint / "vit.pth")
    table = roi.run(cfg, "imagenet", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
    assert table.image_id.tolist() == ["demo_val_00000001", "demo_val_00000002", "demo_val_00000004"]
    assert table.coseg_group.tolist() == ["class-281", "class-967", "class-281"]
    assert (table.method == "coseg").all() and (table.coseg_clusters >= 1).all()
    first = {}
    for row in table.itertuples():
        mask = read_mask(row.mask_path, (row.height, row.width))  # at the image's own size
        assert row.roi_fraction == pytest.approx(mask.mean())
        assert row.flag == ("empty" if not mask.any() else "full" if mask.all() else "ok")
        first[row.mask_path] = open(row.mask_path, "rb").read()
    assert pd.read_parquet(tmp_path / "r.parquet").equals(table)
    again = roi.run(cfg, "imagenet", str(tmp_path / "s.parquet"), str(tmp_path / "r2.parquet"))
    assert again.equals(table)
    assert all(open(p, "rb").read() == b for p, b in first.items())


def test_coseg_config_and_input_errors(vit_checkpoint, demo_dirs, tmp_path):
    with pytest.raises(ConfigError, match=r"roi\.coco\.coseg\.groups: coco has no classes; use blocks"):
        _coseg_config(tmp_path, vit_checkpoint / "vit.pth", dataset="coco")
    with pytest.raises(ConfigError, match=r"roi\.imagenet\.coseg is required by method 'coseg'"):
        validate({"roi": {"imagenet": {"method": "coseg"}}}, whole_workflow=False)
    # COCO: blocks of group_size images in id order
    rows = [dict(image_id=f"{i:012d}", path=str(demo_dirs["coco"] / f"{i:012d}.png"), width=1, height=1,
                 selected=True) for i in (3, 1, 2)]
    groups = roi.stage.coseg_groups(pd.DataFrame(rows), "blocks", 2)
    assert [(g, m.image_id.tolist()) for g, m in groups] == [
        ("block-000000000001", ["000000000001", "000000000002"]), ("block-000000000003", ["000000000003"])]
    # a select table whose size disagrees with the file is caught before any mask is written
    write_table(tmp_path / "s.parquet", pa.Table.from_pylist(rows, schema=SELECT_SCHEMA))
    cfg = _coseg_config(tmp_path, vit_checkpoint / "vit.pth", dataset="coco", groups="blocks")
    with pytest.raises(InputError, match=r"000000000001\.png is 640x360 but the select table says 1x1"):
        roi.run(cfg, "coco", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
    assert not (tmp_path / "out" / "roi").exists() or not any((tmp_path / "out" / "roi").rglob("*.png"))
    # a missing checkpoint is named when the job runs
    cfg["roi"]["coco"]["coseg"]["model"]["weights"]["file"] = str(tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"roi\.coco\.coseg\.model\.weights\.file: .*missing\.pth does not exist"):
        roi.run(cfg, "coco", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))


def test_gpu_features_equal_cpu_features(vit_checkpoint, small_image):
    import torch

    from miqd.roi.features import ViTFeatures

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU path (roi.<dataset>.coseg.device) runs where one exists")
    kwargs = dict(load_size=64, stride=8, layer=11, heads=(0, 1, 2), batch_size=2)
    cpu = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "vit.pth")}, "cpu").extract([small_image] * 2, **kwargs)
    gpu = ViTFeatures(ARCH, {"file": str(vit_checkpoint / "vit.pth")}, "cuda").extract([small_image] * 2, **kwargs)
    for a, b in zip(cpu, gpu, strict=True):
        assert a.grid == b.grid
        np.testing.assert_allclose(a.descriptors, b.descriptors, rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(a.saliency, b.saliency, atol=2e-2)
