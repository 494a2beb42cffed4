"""Prediction tables: their schema, what binds a row to the image it came from, and their checks.

One Parquet file per (model, shard). A row is keyed by (image_id, corruption, roi_level, bg_level)
and carries `sha256`, the content hash of the image file it was computed from; the file's
metadata carries the run fingerprint (the model's fingerprint plus the device, precision and
memory layout it ran with). A row is current only if both still match what the shard holds now.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miqd import __version__
from miqd.errors import InputError

KEY_FIELDS = [
    ("image_id", pa.string()),
    ("corruption", pa.string()),  # "original" for the undistorted source
    ("roi_level", pa.int8()),  # 0 for the original
    ("bg_level", pa.int8()),
]
KEYS = [name for name, _ in KEY_FIELDS]
HASH_FIELD = ("sha256", pa.string())  # of the image file's bytes
PREDICTION_FIELDS = {
    "cls": [("top5_ids", pa.list_(pa.int16())), ("top5_probs", pa.list_(pa.float32()))],
    "det": [("boxes_xyxy", pa.list_(pa.list_(pa.float32(), 4))), ("scores", pa.list_(pa.float32())),
            ("labels", pa.list_(pa.int16()))],
}
PREDICTION_FIELDS["ins"] = PREDICTION_FIELDS["det"] + [("masks_rle", pa.list_(pa.string())),
                                                      ("height", pa.int32()), ("width", pa.int32())]


def run_fingerprint(spec, device: str, precision: str, channels_last: bool) -> str:
    """The model's fingerprint and how it ran, where that changes the numbers."""
    on_cuda = device.startswith("cuda")
    how = {"device": "cuda" if on_cuda else "cpu", "precision": precision if on_cuda else "fp32",
           "channels_last": bool(channels_last) and spec.backend == "timm"}
    return hashlib.sha256(json.dumps([spec.fingerprint, how], sort_keys=True).encode()).hexdigest()[:16]


def schema(task: str, spec=None, fingerprint: str | None = None, how: dict | None = None) -> pa.Schema:
    s = pa.schema(KEY_FIELDS + [HASH_FIELD] + PREDICTION_FIELDS[task])
    if spec is None:
        return s
    return s.with_metadata({
        "miqd.model": json.dumps(spec.as_dict(), sort_keys=True),
        "miqd.fingerprint": fingerprint or "",
        "miqd.run": json.dumps(how or {}, sort_keys=True),
        "miqd.weights": "random" if spec.random_weights else "real",
        "miqd.version": __version__,
    })


def fingerprint_of(table_or_schema) -> str:
    meta = table_or_schema.schema.metadata if hasattr(table_or_schema, "schema") else table_or_schema.metadata
    return (meta or {}).get(b"miqd.fingerprint", b"").decode()


def keys_and_hashes(table: pa.Table) -> list[tuple]:
    """(image_id, corruption, roi_level, bg_level, sha256) of every row."""
    cols = [table.column(k).to_pylist() for k in KEYS + ["sha256"]]
    return list(zip(*cols, strict=True))


def check(table: pa.Table, task: str, where: str) -> None:
    """Rows a label can trust: one per image, list columns of equal length, finite scores.

    `where` names the model and file in the message (e.g. "predictions of model 'x' (path)").
    """
    missing = [n for n, _ in KEY_FIELDS + [HASH_FIELD] + PREDICTION_FIELDS[task] if n not in table.column_names]
    if missing:
        raise InputError(f"{where} lack columns {missing}: written by an older miqd; rerun its infer job")
    keys = [tuple(k[:4]) for k in keys_and_hashes(table)]
    if len(set(keys)) != len(keys):
        seen, dup = set(), None
        for k in keys:
            if k in seen:
                dup = k
                break
            seen.add(k)
        raise InputError(f"{where} hold two rows for image {_name(dup)}; rerun its infer job")
    if task == "cls":
        lengths = pc.list_value_length(table.column("top5_ids")).to_numpy(zero_copy_only=False)
        plen = pc.list_value_length(table.column("top5_probs")).to_numpy(zero_copy_only=False)
        _fail_where(lengths != plen, keys, where, "has {} class ids but {} probabilities", lengths, plen)
        _fail_where(_row_not_finite(table.column("top5_probs")), keys, where, "has a NaN or infinite probability")
        return
    n = {c: pc.list_value_length(table.column(c)).to_numpy(zero_copy_only=False)
         for c in ("boxes_xyxy", "scores", "labels") + (("masks_rle",) if task == "ins" else ())}
    for c in n:
        if c != "boxes_xyxy":
            _fail_where(n[c] != n["boxes_xyxy"], keys, where, "has {} boxes but {} " + c, n["boxes_xyxy"], n[c])
    _fail_where(_row_not_finite(table.column("scores")), keys, where, "has a NaN or infinite score")


def _row_not_finite(column: pa.ChunkedArray) -> np.ndarray:
    col = column.combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy()
    bad = ~np.isfinite(values)
    if not bad.any():
        return np.zeros(len(col), bool)
    rows = np.searchsorted(offsets, np.flatnonzero(bad), side="right") - 1
    out = np.zeros(len(col), bool)
    out[rows] = True
    return out


def _fail_where(mask: np.ndarray, keys: list[tuple], where: str, what: str, *values) -> None:
    if not np.any(mask):
        return
    i = int(np.flatnonzero(mask)[0])
    detail = what.format(*(int(v[i]) for v in values))
    raise InputError(f"{where}: the row of image {_name(keys[i])} {detail}; rerun its infer job")


def _name(key: tuple) -> str:
    image_id, corruption, roi, bg = key
    return f"{image_id} ({corruption})" if corruption == "original" else f"{image_id} {corruption} ({roi}, {bg})"
