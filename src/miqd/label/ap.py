"""Per-image average precision (paper eq. 8) for the det and ins labels, equal to pycocotools.

The label stage scores every (distorted image, model) pair — about 44 M of them at full scale — as
the AP of the model's predictions against a reference: the COCO ground truth (accuracy) or the
model's own thresholded predictions on the clean image (consistency). The number is exactly
`COCOeval(...).stats[0]` for a one-image COCO set (iouType 'bbox' or 'segm', useCats=1, area range
"all", maxDets 100), computed without COCOeval's per-call Python overhead:

* per category, detections are sorted by descending score with a stable sort (ties keep input
  order) and cut to `max_dets`; ground truths are ordered non-crowd first (stable);
* COCO's greedy matching at each IoU threshold t: a detection takes the still-unmatched gt with the
  highest IoU >= min(t, 1 - 1e-10), a later gt winning an equal IoU; once it holds a non-crowd gt it
  never moves to a crowd one; crowd gts ("ignore") can be matched repeatedly, and a detection
  matched to one is ignored (neither true nor false positive);
* precision is made monotone and read at the 101 recall points 0, 0.01, ..., 1 (COCO's
  interpolation); AP is the mean over IoU thresholds, recall points and the categories that have at
  least one non-crowd gt. Categories present only in the predictions do not count (their false
  positives cannot lower any category's precision), as in COCOeval.
* When no category has a non-crowd gt, COCOeval reports -1; these functions return NaN and leave
  the policy to the caller.

* COCO's area range "all", [0, 1e10]: a gt whose area (COCO's annotation `area`) lies outside it
  is ignored like a crowd gt (but matched only once); an unmatched detection whose area lies
  outside it is ignored, not a false positive.
* IoU thresholds within 1e-12 of COCO's (np.linspace(0.5, 0.95, 10)) are COCO's exact values, so a
  config's literal 0.9 is COCO's 0.8999999999999999.

IoUs are pycocotools' too, on boxes in COCO's own xywh (ground truth as its annotations store
it; detections as COCO results from xyxy store them, w = x2 - x1), bbIou's formula; for a crowd gt
the IoU is the intersection over the detection's area. Masks are
decoded from their compressed strings as rleFrString does and intersected run by run as rleIou
does (`mask_iou` equals `pycocotools.mask.iou` exactly), compiled, because pycocotools' per-call
overhead would otherwise be most of the ins label's cost.

Masks are COCO compressed RLE `counts` (str or bytes, as `pycocotools.mask.encode` and the infer
stage's `masks_rle` column write them) plus `size=(height, width)`, the image size every mask of the
call shares; a string whose runs do not cover height x width pixels is rejected.

The matching and AP live in one compiled function over a category's IoU matrix
(`_class_ap_sorted`); boxes, masks and precomputed IoUs (`ap_from_ious`) all go through it.
`batch_ap_boxes` / `batch_ap_masks` score many prediction sets against one reference (the 250
distortions of a source) in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from miqd.errors import InputError

# Built exactly as pycocotools' Params.setDetParams builds iouThrs and recThrs.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, 101)
AREA_ALL = (0.0, 1e5**2)  # Params.areaRng "all"

# ---------------------------------------------------------------------------------------------
# compiled core


@numba.njit(cache=True, nogil=True)
def _top_order(scores, max_dets):
    """Indices by descending score, ties in input order (COCOeval's mergesort of -score), cut to
    max_dets. A plain merge sort: numba's np.argsort(kind="mergesort") takes seconds to compile."""
    n = scores.size
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if scores[order[j]] > scores[order[i]]:  # strictly: equal scores keep input order
                    tmp[k] = order[j]
                    j += 1
                else:
                    tmp[k] = order[i]
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = order[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = order[j]
                j += 1
                k += 1
        order, tmp = tmp, order
        width *= 2
    return order[: min(n, max_dets)]


@numba.njit(cache=True, nogil=True)
def _first_of_class(labels, i):
    """Whether labels[i] is the first occurrence of its value (categories without np.unique)."""
    for j in range(i):
        if labels[j] == labels[i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _class_ap_sorted(ious, crowd, ignore, dt_out, thresholds, rec_thrs):
    """AP of one category (mean over thresholds and recall points); NaN without a non-ignored gt.

    ious: (D, G), rows in descending-score order already cut to max_dets; crowd: (G,) COCO's
    iscrowd (a crowd gt can be matched again); ignore: (G,) crowd or area outside the range;
    dt_out: (D,) detection area outside the range (ignored when unmatched).
    """
    n_dt, n_gt = ious.shape
    # gts ordered non-ignored first, stable (COCOeval's argsort of the ignore flags)
    gorder = np.empty(n_gt, np.int64)
    npig = 0
    for g in range(n_gt):
        if not ignore[g]:
            gorder[npig] = g
            npig += 1
    if npig == 0:
        return np.nan
    k = npig
    for g in range(n_gt):
        if ignore[g]:
            gorder[k] = g
            k += 1
    ig = np.empty(n_gt, np.bool_)
    cr = np.empty(n_gt, np.bool_)
    for gi in range(n_gt):
        ig[gi] = ignore[gorder[gi]]
        cr[gi] = crowd[gorder[gi]]

    taken = np.empty(n_gt, np.bool_)
    pr = np.empty(n_dt, np.float64)
    rc = np.empty(n_dt, np.float64)
    eps = np.spacing(1.0)
    n_rec = rec_thrs.size
    total = 0.0
    for t in range(thresholds.size):
        thr = min(thresholds[t], 1 - 1e-10)
        taken[:] = False
        tp = 0.0
        fp = 0.0
        for d in range(n_dt):
            best = thr
            m = -1
            for gi in range(n_gt):
                if taken[gi] and not cr[gi]:
                    continue
                if m > -1 and not ig[m] and ig[gi]:
                    break
                v = ious[d, gorder[gi]]
                if v < best:
                    continue
                best = v
                m = gi
            if m == -1:
                if not dt_out[d]:
                    fp += 1.0
            else:
                taken[m] = True
                if not ig[m]:
                    tp += 1.0
            rc[d] = tp / npig
            pr[d] = tp / (fp + tp + eps)
        for d in range(n_dt - 1, 0, -1):
            if pr[d] > pr[d - 1]:
                pr[d - 1] = pr[d]
        # precision at the first detection whose recall reaches each recall point, 0 past the end
        q = 0.0
        d = 0
        for r in range(n_rec):
            while d < n_dt and rc[d] < rec_thrs[r]:
                d += 1
            if d == n_dt:
                break
            q += pr[d]
        total += q / n_rec
    return total / thresholds.size


@numba.njit(cache=True, nogil=True)
def _outside(area, lo, hi):
    out = np.empty(area.size, np.bool_)
    for i in range(area.size):
        out[i] = area[i] < lo or area[i] > hi
    return out


@numba.njit(cache=True, nogil=True)
def _class_ap(ious, scores, crowd, thresholds, rec_thrs, max_dets):
    order = _top_order(scores, max_dets)
    return _class_ap_sorted(np.ascontiguousarray(ious[order]), crowd, crowd, np.zeros(order.size, np.bool_),
                            thresholds, rec_thrs)


@numba.njit(cache=True, nogil=True)
def _box_iou(dt, gt, crowd):
    """pycocotools' bbIou on xywh boxes."""
    n, m = dt.shape[0], gt.shape[0]
    out = np.zeros((n, m), np.float64)
    for g in range(m):
        gx, gy, gw, gh = gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3]
        ga = gw * gh
        for d in range(n):
            dx, dy, dw, dh = dt[d, 0], dt[d, 1], dt[d, 2], dt[d, 3]
            w = min(dw + dx, gw + gx) - max(dx, gx)
            if w <= 0:
                continue
            h = min(dh + dy, gh + gy) - max(dy, gy)
            if h <= 0:
                continue
            i = w * h
            da = dw * dh
            u = da if crowd[g] else da + ga - i
            out[d, g] = i / u
    return out


@numba.njit(cache=True, nogil=True)
def _boxes_ap(dt_boxes, dt_scores, dt_labels, gt_boxes, gt_labels, gt_crowd, gt_ignore, thresholds, rec_thrs,
              max_dets):
    total = 0.0
    n = 0
    for first in range(gt_labels.size):
        if not _first_of_class(gt_labels, first):
            continue
        c = gt_labels[first]
        gsel = np.flatnonzero(gt_labels == c)
        dsel = np.flatnonzero(dt_labels == c)
        dsel = dsel[_top_order(dt_scores[dsel], max_dets)]
        ious = _box_iou(dt_boxes[dsel], gt_boxes[gsel], gt_crowd[gsel])
        dt_out = _outside(dt_boxes[dsel, 2] * dt_boxes[dsel, 3], AREA_ALL[0], AREA_ALL[1])
        ap = _class_ap_sorted(ious, gt_crowd[gsel], gt_ignore[gsel], dt_out, thresholds, rec_thrs)
        if not np.isnan(ap):
            total += ap
            n += 1
    return total / n if n else np.nan


@numba.njit(cache=True, nogil=True)
def _batch_boxes_ap(dt_boxes, dt_scores, dt_labels, offsets, gt_boxes, gt_labels, gt_crowd, gt_ignore, thresholds,
                    rec_thrs, max_dets):
    out = np.empty(offsets.size - 1, np.float64)
    for b in range(out.size):
        lo, hi = offsets[b], offsets[b + 1]
        out[b] = _boxes_ap(dt_boxes[lo:hi], dt_scores[lo:hi], dt_labels[lo:hi], gt_boxes, gt_labels, gt_crowd,
                           gt_ignore, thresholds, rec_thrs, max_dets)
    return out


# ---------------------------------------------------------------------------------------------
# compiled RLE masks: COCO compressed counts -> foreground intervals -> IoU


@numba.njit(cache=True, nogil=True)
def _parse_rles(buf, offsets, height, width):
    """Decode concatenated compressed RLE strings (pycocotools' rleFrString) into foreground
    intervals [start, end) of column-major pixel indices.

    Returns (starts, ends, interval offsets, areas, bad mask, reason): reason 0 = fine, 1 = a
    character outside '0'..'o', 2 = a truncated count, 3 = the runs do not cover height * width
    pixels.
    """
    n = offsets.size - 1
    # every count ends with a character without the "more" bit, and at most half are foreground
    n_counts = 0
    for p in range(offsets[0], offsets[-1]):
        n_counts += ((np.int64(buf[p]) - 48) & 0x20) == 0
    starts = np.empty(max(n_counts // 2, 1), np.int32)
    ends = np.empty(max(n_counts // 2, 1), np.int32)
    ioff = np.zeros(n + 1, np.int64)
    areas = np.zeros(n, np.int64)
    n_pixels = height * width
    k_out = 0
    for i in range(n):
        p, stop = offsets[i], offsets[i + 1]
        m = 0
        prev2 = 0  # cnts[m - 2]
        prev1 = 0  # cnts[m - 1]
        pos = 0
        area = 0
        while p < stop:
            x = 0
            k = 0
            more = True
            while more:
                if p >= stop:
                    return starts, ends, ioff, areas, i, 2
                c = np.int64(buf[p]) - 48
                if c < 0 or c > 63:
                    return starts, ends, ioff, areas, i, 1
                x |= (c & 0x1F) << (5 * k)
                more = (c & 0x20) != 0
                p += 1
                k += 1
                if not more and (c & 0x10) != 0:
                    x |= np.int64(-1) << (5 * k)
            if m > 2:
                x += prev2
            cnt = x & 0xFFFFFFFF  # stored as uint32 by pycocotools
            if m % 2 == 1 and cnt > 0:
                starts[k_out] = pos
                ends[k_out] = pos + cnt
                k_out += 1
                area += cnt
            pos += cnt
            prev2, prev1 = prev1, cnt
            m += 1
        if pos != n_pixels:
            return starts, ends, ioff, areas, i, 3
        ioff[i + 1] = k_out
        areas[i] = area
    return starts, ends, ioff, areas, -1, 0


@numba.njit(cache=True, nogil=True)
def _rle_iou(dsel, gsel, d_starts, d_ends, d_off, d_area, g_starts, g_ends, g_off, g_area, crowd):
    """IoU of masks dsel x gsel as pycocotools' rleIou: intersection over union, or over the
    detection's area for a crowd gt; 0 without overlap."""
    out = np.zeros((dsel.size, gsel.size), np.float64)
    for gi in range(gsel.size):
        g = gsel[gi]
        ga, gb = g_off[g], g_off[g + 1]
        for di in range(dsel.size):
            d = dsel[di]
            a, b = d_off[d], d_off[d + 1]
            if a == b or ga == gb or d_ends[b - 1] <= g_starts[ga] or g_ends[gb - 1] <= d_starts[a]:
                continue  # an empty mask, or pixel ranges apart
            # skip the intervals of each that end before the other's first one starts
            a += np.searchsorted(d_ends[a:b], g_starts[ga], side="right")
            j = ga + np.searchsorted(g_ends[ga:gb], d_starts[a], side="right")
            inter = 0
            while a < b and j < gb:
                lo = max(d_starts[a], g_starts[j])
                hi = min(d_ends[a], g_ends[j])
                if hi > lo:
                    inter += hi - lo
                if d_ends[a] < g_ends[j]:
                    a += 1
                else:
                    j += 1
            if inter == 0:
                continue
            union = d_area[d] if crowd[g] else d_area[d] + g_area[g] - inter
            out[di, gi] = inter / union
    return out


@numba.njit(cache=True, nogil=True)
def _masks_ap(d_starts, d_ends, d_off, d_area, dt_scores, dt_labels, g_starts, g_ends, g_off, g_area, gt_labels,
              gt_crowd, gt_ignore, thresholds, rec_thrs, max_dets):
    total = 0.0
    n = 0
    for first in range(gt_labels.size):
        if not _first_of_class(gt_labels, first):
            continue
        c = gt_labels[first]
        gsel = np.flatnonzero(gt_labels == c)
        dsel = np.flatnonzero(dt_labels == c)
        dsel = dsel[_top_order(dt_scores[dsel], max_dets)]
        ious = _rle_iou(dsel, gsel, d_starts, d_ends, d_off, d_area, g_starts, g_ends, g_off, g_area, gt_crowd)
        dt_out = _outside(d_area[dsel].astype(np.float64), AREA_ALL[0], AREA_ALL[1])
        ap = _class_ap_sorted(ious, gt_crowd[gsel], gt_ignore[gsel], dt_out, thresholds, rec_thrs)
        if not np.isnan(ap):
            total += ap
            n += 1
    return total / n if n else np.nan


@numba.njit(cache=True, nogil=True)
def _batch_masks_ap(buf, str_offsets, set_offsets, height, width, dt_scores, dt_labels,
                    g_starts, g_ends, g_off, g_area, gt_labels, gt_crowd, gt_ignore, thresholds, rec_thrs, max_dets):
    """Each set's masks are decoded just before they are scored, so they are still in cache.
    Returns (APs, bad mask, reason) as `_parse_rles` reports problems."""
    out = np.full(set_offsets.size - 1, np.nan)
    for b in range(out.size):
        lo, hi = set_offsets[b], set_offsets[b + 1]
        d_starts, d_ends, d_off, d_area, bad, reason = _parse_rles(buf, str_offsets[lo:hi + 1], height, width)
        if reason:
            return out, lo + bad, reason
        out[b] = _masks_ap(d_starts, d_ends, d_off, d_area, dt_scores[lo:hi], dt_labels[lo:hi], g_starts, g_ends,
                           g_off, g_area, gt_labels, gt_crowd, gt_ignore, thresholds, rec_thrs, max_dets)
    return out, -1, 0


# ---------------------------------------------------------------------------------------------
# input checks (where bad input is first seen; the caller adds the file and model to the message)


@numba.njit(cache=True, nogil=True)
def _first_bad_box(boxes):
    """(index, 1) for the first box with a non-finite value, (index, 2) for a negative w or h."""
    for i in range(boxes.shape[0]):
        for j in range(4):
            if not np.isfinite(boxes[i, j]):
                return i, 1
        if boxes[i, 2] < 0 or boxes[i, 3] < 0:
            return i, 2
    return -1, 0


def _boxes(boxes, what: str) -> np.ndarray:
    a = np.asarray(boxes, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4), np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise InputError(f"{what}: expected an (N, 4) array of xywh boxes, got shape {a.shape}")
    a = np.ascontiguousarray(a)
    bad, problem = _first_bad_box(a)
    if problem == 1:
        raise InputError(f"{what}: box {bad} {a[bad].tolist()} has NaN or infinity; drop or fix those predictions")
    if problem == 2:
        raise InputError(f"{what}: box {bad} {a[bad].tolist()} has a negative width or height; boxes must be "
                         f"COCO's xywh")
    return a


def xyxy_to_xywh(boxes) -> np.ndarray:
    """Corner boxes as COCO results store them: (x1, y1, x2 - x1, y2 - y1), in float64."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([a[:, :2], a[:, 2:] - a[:, :2]], axis=1)


def _ignore(crowd: np.ndarray, area) -> np.ndarray:
    """COCO's gt ignore flags: crowd, or an area outside the range "all"."""
    if area is None:
        return crowd
    a = np.asarray(area, dtype=np.float64).reshape(-1)
    if a.shape != crowd.shape:
        raise InputError(f"gt_area: expected {crowd.size} areas (one per ground-truth object), got shape {a.shape}")
    return np.ascontiguousarray(crowd | (a < AREA_ALL[0]) | (a > AREA_ALL[1]))


def _vector(values, n: int, what: str, dtype, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.size == 0 and n == 0:
        return np.zeros(0, dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"{what}: expected {n} {name} (one per box or mask), got shape {a.shape}")
    if dtype is np.int64 and a.dtype.kind not in "iu":
        raise InputError(f"{what}: {name} must be integer category ids, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if dtype is np.float64 and not np.isfinite(a).all():
        raise InputError(f"{what}: {name} contain NaN or infinity")
    return a


def _crowd(gt_crowd, n: int) -> np.ndarray:
    if gt_crowd is None:
        return np.zeros(n, np.bool_)
    a = np.asarray(gt_crowd)
    if a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"gt_crowd: expected {n} flags (one per ground-truth object), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.bool_)


def _thresholds(iou_thresholds) -> np.ndarray:
    if iou_thresholds is COCO_IOU_THRESHOLDS:
        return iou_thresholds
    t = np.array(iou_thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise InputError(f"iou_thresholds: need one or more values in [0, 1], got {t.tolist()}")
    near = np.abs(t[:, None] - COCO_IOU_THRESHOLDS[None, :]) < 1e-12  # a literal 0.9 is COCO's 0.8999999999999999
    hit = near.any(axis=1)
    t[hit] = COCO_IOU_THRESHOLDS[near.argmax(axis=1)[hit]]
    return np.ascontiguousarray(t)


def _set_offsets(set_sizes, n: int) -> np.ndarray:
    sizes = np.asarray(set_sizes)
    if sizes.ndim != 1 or (sizes.size and (sizes.dtype.kind not in "iu" or (sizes < 0).any())):
        raise InputError(f"set_sizes: expected non-negative integer sizes, one per prediction set, got {sizes!r}")
    offsets = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] != n:
        raise InputError(f"set_sizes: they sum to {int(offsets[-1])} but there are {n} detections")
    return offsets


def _max_dets(max_dets) -> int:
    if int(max_dets) != max_dets or max_dets < 1:
        raise InputError(f"max_dets: need a positive integer, got {max_dets!r}")
    return int(max_dets)


def _size(size) -> list[int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size: expected (height, width) of the image the masks belong to, got {size!r}") from None
    if h <= 0 or w <= 0 or h * w >= 2**31:
        raise InputError(f"size: height and width must be positive, with fewer than 2**31 pixels, got {size!r}")
    return [h, w]


_RLE_PROBLEMS = {1: "has a character outside '0'..'o'", 2: "ends inside a count",
                 3: "has runs that do not cover height x width pixels"}


def _joined(counts: Sequence[str | bytes], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Compressed RLE strings as one uint8 buffer and the offsets of each string in it."""
    counts = list(counts)
    try:  # the usual case: all bytes, or all ASCII str
        joined = b"".join(counts)
    except TypeError:
        try:
            joined = "".join(counts).encode("ascii")
        except (TypeError, UnicodeEncodeError):
            joined = None
    if joined is None or len(joined) != sum(map(len, counts)):
        for i, c in enumerate(counts):
            if not isinstance(c, (str, bytes)):
                raise InputError(f"{what}: mask {i} is {type(c).__name__}, expected a COCO compressed RLE counts "
                                 f"string (encode masks with pycocotools.mask.encode)")
            if isinstance(c, str) and not c.isascii():
                raise InputError(f"{what}: mask {i} has a non-ASCII character; expected COCO compressed RLE "
                                 f"counts")
        joined = b"".join(c.encode("ascii") if isinstance(c, str) else c for c in counts)  # str and bytes mixed
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, counts), np.int64, len(counts)), out=offsets[1:])
    return np.frombuffer(joined, np.uint8), offsets


def _rle_problem(what: str, bad: int, reason: int, h: int, w: int) -> InputError:
    return InputError(f"{what}: mask {bad} {_RLE_PROBLEMS[reason]} (size {h}x{w}); expected COCO compressed "
                      f"RLE counts of a {h}x{w} mask, as pycocotools.mask.encode writes them")


def _masks(counts: Sequence[str | bytes], size, what: str) -> tuple:
    """Parse compressed RLE counts of one image size into the compiled functions' arrays."""
    h, w = _size(size)
    *arrays, bad, reason = _parse_rles(*_joined(counts, what), h, w)
    if reason:
        raise _rle_problem(what, bad, reason, h, w)
    return tuple(arrays)


# ---------------------------------------------------------------------------------------------
# public API


def box_iou(dt_xywh, gt_xywh, gt_crowd=None) -> np.ndarray:
    """(N, M) IoU of detections against ground-truth boxes, COCO semantics (crowd: inter / area(dt))."""
    dt = _boxes(dt_xywh, "dt_xywh")
    gt = _boxes(gt_xywh, "gt_xywh")
    return _box_iou(dt, gt, _crowd(gt_crowd, len(gt)))


def mask_iou(dt_counts: Sequence[str | bytes], gt_counts: Sequence[str | bytes], gt_crowd=None, *,
             size: tuple[int, int]) -> np.ndarray:
    """(N, M) IoU of detection masks against ground-truth masks, equal to pycocotools.mask.iou."""
    dt = _masks(dt_counts, size, "dt_counts")
    gt = _masks(gt_counts, size, "gt_counts")
    n, m = len(dt[3]), len(gt[3])
    return _rle_iou(np.arange(n), np.arange(m), *dt, *gt, _crowd(gt_crowd, m))


def ap_from_ious(ious: Sequence[np.ndarray], dt_scores: Sequence[np.ndarray], gt_crowd: Sequence[np.ndarray], *,
                 iou_thresholds=COCO_IOU_THRESHOLDS, max_dets: int = 100) -> float:
    """AP of one image from one IoU matrix per category.

    Item k describes one category: `ious[k]` is (n_k, m_k) between its detections (scores
    `dt_scores[k]`, any order) and its ground truths (crowd flags `gt_crowd[k]`). A category with
    detections but no ground truth may be left out; it would not count anyway.
    """
    if not (len(ious) == len(dt_scores) == len(gt_crowd)):
        raise InputError(f"ap_from_ious: got {len(ious)} IoU matrices, {len(dt_scores)} score vectors and "
                         f"{len(gt_crowd)} crowd vectors; need one of each per category")
    thresholds = _thresholds(iou_thresholds)
    max_dets = _max_dets(max_dets)
    total, n = 0.0, 0
    for k, (iou, scores, crowd) in enumerate(zip(ious, dt_scores, gt_crowd)):
        crowd = np.ascontiguousarray(crowd, dtype=np.bool_).reshape(-1)
        scores = _vector(scores, len(scores), f"dt_scores[{k}]", np.float64, "scores")
        iou = np.ascontiguousarray(iou, dtype=np.float64)
        if iou.size == 0:
            iou = np.zeros((len(scores), len(crowd)), np.float64)
        if iou.shape != (len(scores), len(crowd)):
            raise InputError(f"ious[{k}]: shape {iou.shape} does not match {len(scores)} detections x "
                             f"{len(crowd)} ground truths")
        ap = _class_ap(iou, scores, crowd, thresholds, COCO_RECALL_THRESHOLDS, max_dets)
        if not np.isnan(ap):
            total += ap
            n += 1
    return total / n if n else float("nan")


def image_ap_boxes(dt_boxes, dt_scores, dt_labels, gt_boxes, gt_labels, gt_crowd=None, *, gt_area=None,
                   iou_thresholds=COCO_IOU_THRESHOLDS, max_dets: int = 100) -> float:
    """COCO box AP of one image's detections (xywh boxes, scores, category ids) against a reference.

    `gt_area`: the reference's COCO `area` fields (default: w * h), which the area range applies to."""
    return float(batch_ap_boxes(dt_boxes, dt_scores, dt_labels, [len(dt_labels)], gt_boxes, gt_labels, gt_crowd,
                                gt_area=gt_area, iou_thresholds=iou_thresholds, max_dets=max_dets)[0])


def batch_ap_boxes(dt_boxes, dt_scores, dt_labels, set_sizes, gt_boxes, gt_labels, gt_crowd=None, *, gt_area=None,
                   iou_thresholds=COCO_IOU_THRESHOLDS, max_dets: int = 100) -> np.ndarray:
    """`image_ap_boxes` of many prediction sets against one reference, in one compiled call.

    The sets are concatenated: set b is the next `set_sizes[b]` rows of dt_boxes / dt_scores /
    dt_labels (the flattened list columns of a predictions table). Returns (B,) float64.
    """
    dt = _boxes(dt_boxes, "dt_boxes")
    offsets = _set_offsets(set_sizes, len(dt))
    gt = _boxes(gt_boxes, "gt_boxes")
    crowd = _crowd(gt_crowd, len(gt))
    area = gt[:, 2] * gt[:, 3] if gt_area is None else gt_area
    return _batch_boxes_ap(dt, _vector(dt_scores, len(dt), "dt_scores", np.float64, "scores"),
                           _vector(dt_labels, len(dt), "dt_labels", np.int64, "labels"), offsets,
                           gt, _vector(gt_labels, len(gt), "gt_labels", np.int64, "labels"),
                           crowd, _ignore(crowd, area), _thresholds(iou_thresholds), COCO_RECALL_THRESHOLDS,
                           _max_dets(max_dets))


def image_ap_masks(dt_counts: Sequence[str | bytes], dt_scores, dt_labels, gt_counts: Sequence[str | bytes],
                   gt_labels, gt_crowd=None, *, size: tuple[int, int], gt_area=None,
                   iou_thresholds=COCO_IOU_THRESHOLDS, max_dets: int = 100) -> float:
    """COCO mask AP of one image's detections (RLE counts, scores, category ids) against a reference.

    `gt_area`: the reference's COCO `area` fields (default: the masks' pixel counts)."""
    return float(batch_ap_masks(dt_counts, dt_scores, dt_labels, [len(dt_counts)], gt_counts, gt_labels, gt_crowd,
                                size=size, gt_area=gt_area, iou_thresholds=iou_thresholds, max_dets=max_dets)[0])


def batch_ap_masks(dt_counts: Sequence[str | bytes], dt_scores, dt_labels, set_sizes, gt_counts: Sequence[str | bytes],
                   gt_labels, gt_crowd=None, *, size: tuple[int, int], gt_area=None,
                   iou_thresholds=COCO_IOU_THRESHOLDS, max_dets: int = 100) -> np.ndarray:
    """`image_ap_masks` of many prediction sets against one reference (parsed once), in one call.

    The sets are concatenated as in `batch_ap_boxes`; every mask has the same `size`.
    """
    h, w = _size(size)
    buf, str_offsets = _joined(dt_counts, "dt_counts")
    n = len(str_offsets) - 1
    set_offsets = _set_offsets(set_sizes, n)
    gt = _masks(gt_counts, size, "gt_counts")
    m = len(gt[3])
    crowd = _crowd(gt_crowd, m)
    out, bad, reason = _batch_masks_ap(buf, str_offsets, set_offsets, h, w,
                                       _vector(dt_scores, n, "dt_scores", np.float64, "scores"),
                                       _vector(dt_labels, n, "dt_labels", np.int64, "labels"), *gt,
                                       _vector(gt_labels, m, "gt_labels", np.int64, "labels"), crowd,
                                       _ignore(crowd, gt[3] if gt_area is None else gt_area),
                                       _thresholds(iou_thresholds), COCO_RECALL_THRESHOLDS, _max_dets(max_dets))
    if reason:
        raise _rle_problem("dt_counts", bad, reason, h, w)
    return out
