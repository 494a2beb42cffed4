"""Label-stage speed on one core: per-image AP (det, ins) against pycocotools, and cls agreement.

    .venv/bin/python benchmarks/label.py [--refs 2] [--sets 250] [--seed 0]

Prints a Markdown table of (image, model) pairs per CPU-second. Each pair is one prediction set scored
against one reference: COCO-like images with ~7 objects over ~3 classes, 20-100 predictions per
image (jittered copies of the objects, duplicates, false positives, some wrong classes), masks at
640x480. Both implementations score the same pairs in the same run, single-threaded, and must give
the same APs (checked, to 1e-6):

* pycocotools: `COCOeval(gt, dt, iouType)`, `evaluate()` + `accumulate()` and stats[0]'s mean, on
  a one-image COCO set (the COCO objects are built outside the timer, in pycocotools' favour);
* miqd: `image_ap_boxes` / `image_ap_masks` called once per pair, and `batch_ap_boxes` /
  `batch_ap_masks` scoring the `--sets` prediction sets of one reference per call (the 250
  distortions of a source);
* cls: top-1 consistency and accuracy, vectorised over all pairs (no reference implementation).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from miqd.label.ap import batch_ap_boxes, batch_ap_masks, image_ap_boxes, image_ap_masks  # noqa: E402

W, H = 640, 480


def _polygon(rng, box) -> list[float]:
    """A random star-shaped polygon filling most of a box."""
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    a = np.sort(rng.uniform(0, 2 * np.pi, 10))
    r = rng.uniform(0.6, 1.0, a.size)
    return np.stack([cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)], 1).ravel().tolist()


def _rle(poly) -> bytes:
    return mask_utils.merge(mask_utils.frPyObjects([poly], H, W))["counts"]


def reference(rng) -> dict:
    n = int(rng.integers(4, 11))
    xy = rng.uniform(0, [W - 60, H - 60], size=(n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(20, 300, size=(n, 2)), [W, H])], 1)
    polys = [_polygon(rng, b) for b in boxes]
    return {"boxes": boxes, "labels": rng.choice([1, 3, 18], n), "crowd": rng.random(n) < 0.05,
            "polys": polys, "counts": [_rle(p) for p in polys]}


def predictions(rng, ref: dict, masks: bool) -> dict:
    n_total = int(rng.integers(20, 101))
    boxes, labels, polys = [], [], []
    while len(boxes) < n_total:
        if rng.random() < 0.4:  # a (jittered) detection of a reference object
            i = int(rng.integers(len(ref["labels"])))
            s = (ref["boxes"][i, 2:] - ref["boxes"][i, :2]).max() * rng.uniform(0, 0.15)
            shift = rng.normal(0, s, 4)
            box = ref["boxes"][i] + shift
            label = ref["labels"][i] if rng.random() < 0.9 else int(rng.choice([1, 3, 18, 44]))
            poly = (np.asarray(ref["polys"][i]) + np.tile(shift[:2], len(ref["polys"][i]) // 2)).tolist()
        else:  # a false positive
            xy = rng.uniform(0, [W - 40, H - 40])
            box = np.concatenate([xy, xy + rng.uniform(10, 200, 2)])
            label = int(rng.choice([1, 3, 18, 44]))
            poly = _polygon(rng, box)
        box[2:] = np.maximum(box[2:], box[:2])
        boxes.append(box)
        labels.append(label)
        polys.append(poly)
    out = {"boxes": np.array(boxes), "labels": np.array(labels), "scores": np.round(rng.random(n_total), 3)}
    if masks:
        out["counts"] = [_rle(p) for p in polys]
    return out


def coco_pair(ref: dict, pred: dict, iou_type: str) -> tuple[COCO, COCO]:
    cats = [{"id": c} for c in sorted({*ref["labels"].tolist(), *pred["labels"].tolist()})]
    image = [{"id": 1, "height": H, "width": W}]

    def ann(i, src, crowd, score=None):
        a = {"id": i + 1, "image_id": 1, "category_id": int(src["labels"][i]), "iscrowd": int(crowd)}
        x1, y1, x2, y2 = src["boxes"][i].tolist()
        if iou_type == "bbox":
            a.update(bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1))
        else:
            rle = {"size": [H, W], "counts": src["counts"][i]}
            a.update(segmentation=rle, area=float(mask_utils.area(rle)), bbox=mask_utils.toBbox(rle).tolist())
        if score is not None:
            a["score"] = float(score)
        return a

    out = []
    for anns in ([ann(i, ref, ref["crowd"][i]) for i in range(len(ref["labels"]))],
                 [ann(i, pred, False, pred["scores"][i]) for i in range(len(pred["labels"]))]):
        coco = COCO()
        coco.dataset = {"images": image, "annotations": anns, "categories": cats}
        coco.createIndex()
        out.append(coco)
    return out[0], out[1]


def pycocotools_ap(gt: COCO, dt: COCO, iou_type: str) -> float:
    E = COCOeval(gt, dt, iou_type)
    E.params.imgIds = [1]
    E.evaluate()
    E.accumulate()
    s = E.eval["precision"][:, :, :, 0, -1]  # stats[0]: area "all", maxDets 100
    return float(np.mean(s[s > -1])) if (s > -1).any() else float("nan")


def rate(fn, n_pairs: int, repeats: int = 3) -> tuple[float, object]:
    """Pairs per CPU-second, best of `repeats` after a warm-up call (compilation, caches).

    CPU time of this (single-threaded) process, not wall time, so that other work on the
    machine does not count against either implementation.
    """
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return n_pairs / best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=2, help="references (source images) per task")
    parser.add_argument("--sets", type=int, default=250, help="prediction sets (distorted images) per reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for task, iou_type in (("det", "bbox"), ("ins", "segm")):
        groups = []  # (reference, its prediction sets)
        for _ in range(args.refs):
            ref = reference(rng)
            groups.append((ref, [predictions(rng, ref, task == "ins") for _ in range(args.sets)]))
        pairs = [(ref, p) for ref, sets in groups for p in sets]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
            cocos = [coco_pair(r, p, iou_type) for r, p in pairs]
            ref_rate, ref_ap = rate(lambda: [pycocotools_ap(g, d, iou_type) for g, d in cocos], len(pairs), 1)

        if task == "det":
            def single():
                return [image_ap_boxes(p["boxes"], p["scores"], p["labels"], r["boxes"], r["labels"], r["crowd"])
                        for r, p in pairs]
        else:
            def single():
                return [image_ap_masks(p["counts"], p["scores"], p["labels"], r["counts"], r["labels"], r["crowd"],
                                       size=(H, W)) for r, p in pairs]
        flat = []  # per reference: its sets concatenated, as a predictions table's list columns give them
        for r, sets in groups:
            cols = {k: np.concatenate([p[k] for p in sets]) for k in ("boxes", "scores", "labels")}
            cols["sizes"] = np.array([len(p["labels"]) for p in sets])
            if task == "ins":
                cols["counts"] = [c for p in sets for c in p["counts"]]
            flat.append((r, cols))

        def batched():
            if task == "det":
                out = [batch_ap_boxes(c["boxes"], c["scores"], c["labels"], c["sizes"], r["boxes"], r["labels"],
                                      r["crowd"]) for r, c in flat]
            else:
                out = [batch_ap_masks(c["counts"], c["scores"], c["labels"], c["sizes"], r["counts"], r["labels"],
                                      r["crowd"], size=(H, W)) for r, c in flat]
            return np.concatenate(out)

        single_rate, single_ap = rate(single, len(pairs))
        batch_rate, batch_ap = rate(batched, len(pairs))
        np.testing.assert_allclose(single_ap, ref_ap, atol=1e-6, err_msg=f"{task}: APs differ from pycocotools")
        np.testing.assert_array_equal(batch_ap, single_ap)
        rows.append((task, "one call per pair", len(pairs), ref_rate, single_rate))
        rows.append((task, f"batched: one call per reference ({args.sets} sets)", len(pairs), ref_rate, batch_rate))

    # cls: consistency 1[top1(x') == top1(x)] and accuracy 1[top1(x') == gt] over models x images
    n_models, n_sources, n_dist = 50, 1000, 250
    top1 = rng.integers(0, 1000, size=(n_models, n_sources, n_dist), dtype=np.int16)
    top1_clean = rng.integers(0, 1000, size=(n_models, n_sources, 1), dtype=np.int16)
    gt = rng.integers(0, 1000, size=(1, n_sources, 1), dtype=np.int16)
    cls_rate, _ = rate(lambda: ((top1 == top1_clean), (top1 == gt)), top1.size)
    rows.append(("cls", "vectorised (consistency + accuracy)", top1.size, None, cls_rate))

    print("| task | miqd call | pairs | pycocotools pairs/s | miqd pairs/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for task, how, n, ref, ours in rows:
        ref_s = f"{ref:,.0f}" if ref else "-"
        ratio = f"{ours / ref:,.0f}x" if ref else "-"
        print(f"| {task} | {how} | {n:,} | {ref_s} | {ours:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
