"""The evaluation's scoring stage (paper §6.1): what the tables of `miqd.evaluation` are made from.

Two steps, one per rule:
* `evaluate_run`: a run's model.pt scores the validation images of every evaluated task (its
  own, and the others for cross-task generalisation) -> predictions.parquet, summary.csv;
* `baselines`: HVS baselines of a task's validation images: PSNR and SSIM (the label table's,
  computed from the source where a published download lacks them) and pyiqa metrics when
  available -> baselines/<task>.parquet. Baselines where lower means better (LPIPS, DISTS) are
  negated, so that every correlation reads the same way.

The third step, every table and figure from those files, is `miqd.evaluation.stage.report`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from miqd import layout
from miqd.errors import InputError
from miqd.evaluation.tables import HVS_ALWAYS, KEEP, metrics
from miqd.io import read_image, write_table, write_text
from miqd.train import files
from miqd.train.data import samples
from miqd.train.networks import model_def

log = logging.getLogger("miqd.evaluate")

BASELINE_STATUS_KEY = b"miqd.baselines"  # baselines/<task>.parquet's metadata: {metric: "ok" or why not}


def _relative(paths: pd.Series, outdir: str) -> list[str]:
    """Paths under outdir relative to it, so outputs do not depend on where outdir is."""
    root = Path(outdir).resolve()
    out = []
    for p in paths:
        q = Path(p).resolve()
        out.append(q.relative_to(root).as_posix() if q.is_relative_to(root) else str(p))
    return out


def val_samples(config: dict, task: str) -> pd.DataFrame:
    """A task's validation rows of the sample table (an error if the split left none)."""
    table = samples(config, task)
    val = table[table["split"] == "val"].reset_index(drop=True)
    if val.empty:
        raise InputError(f"task {task}: the split has no validation images")
    return val


# ---------------------------------------------------------------------------------------------
# one run


def evaluate_run(config: dict, run_name: str) -> pd.DataFrame:
    """Predictions of a run's model on every evaluated task's validation images, and a summary."""
    import torch

    from miqd.train.data import QualityDataset
    from miqd.devices import resolve_device
    from miqd.train.networks import load_quality_model
    from miqd.train.loop import predict
    from miqd.train.transforms import Preprocess

    run = files.find_run(config, run_name)
    outdir = config["outdir"]
    e = config["evaluate"]
    torch.set_num_threads(e["threads"])
    device = resolve_device(e["device"], "evaluate.device")
    model, ckpt = load_quality_model(files.train_outputs(outdir, run_name)["model"], device)
    s = ckpt["settings"]
    region = s["region_size"] if model_def(s["model"]).region else None
    prep = Preprocess(s["resize"], s["crop"], region, train=False)
    tasks = files.evaluated_tasks(config)
    if run["task"] not in tasks:
        tasks = [run["task"], *tasks]
    frames, summary = [], []
    for task in tasks:
        val = val_samples(config, task)
        dataset = QualityDataset(val, run["label"], prep)
        pred = predict(model, dataset, list(range(len(val))), e["batch_size"], e["workers"], device, e["precision"])
        df = val[KEEP].copy()
        df.insert(1, "path", _relative(val["path"], outdir))
        df["pred"] = pred.astype(np.float64)
        frames.append(df)
        m = metrics(df["pred"].to_numpy(), df[run["label"]].to_numpy())
        summary.append({"run": run_name, "model": run["model"], "train_task": run["task"], "label": run["label"],
                        "test_task": task, **m, "best_step": ckpt["step"], "backbone_init": ckpt["backbone_init"],
                        "region_init": ckpt["region_init"]})
        log.info("%s on %s val (%d images): SRCC %.4f PLCC %.4f KRCC %.4f RMSE %.4f", run_name, task, m["n"],
                 m["srcc"], m["plcc"], m["krcc"], m["rmse"])
    out = files.evaluate_outputs(outdir, run_name)
    predictions = pd.concat(frames, ignore_index=True)
    write_table(out["predictions"], predictions)
    write_text(out["summary"], pd.DataFrame(summary).to_csv(index=False, float_format="%.6g"))
    return predictions


# ---------------------------------------------------------------------------------------------
# baselines


def _psnr_ssim_from_sources(val: pd.DataFrame) -> pd.DataFrame:
    """PSNR / SSIM to the undistorted source where the sample table has none (published data)."""
    from miqd.fidelity import SSIMReference, psnr

    val = val.copy()
    todo = val["psnr"].isna() | val["ssim"].isna()
    for src, rows in val[todo].groupby("src_path", sort=False):
        if not src or not Path(src).is_file():
            raise InputError(f"PSNR/SSIM of {rows['image_id'].iloc[0]} need its source image, which is "
                             f"missing ({src or 'no src_images/<id>.* file'})")
        ref = read_image(src)
        ssim_ref = SSIMReference(ref)
        for i in rows.index:
            img = read_image(val.at[i, "path"])
            if img.shape != ref.shape:
                raise InputError(f"{val.at[i, 'path']} is {img.shape[1]}x{img.shape[0]}, its source {src} "
                                 f"{ref.shape[1]}x{ref.shape[0]}; full-reference metrics need equal sizes")
            val.at[i, "psnr"], val.at[i, "ssim"] = psnr(ref, img), ssim_ref(img)
    return val


def _pyiqa_metric(entry: dict, device: str):
    """(callable on (distorted, reference) float batches -> scores, lower_better, full_reference)."""
    from miqd import nriqa

    name = entry["name"]
    weights = entry.get("weights", "hub")
    if name in nriqa.available_metrics():  # no-reference, the select stage's registry
        metric = nriqa.create_metric(name, weights, device, key=f"evaluate.pyiqa {name}")
        return (lambda dist, ref: metric.scores(dist)), metric.lower_better, False
    import pyiqa

    kwargs = {}
    if isinstance(weights, dict):
        if not Path(weights["file"]).is_file():
            raise InputError(f"weights file {weights['file']} does not exist")
        kwargs["pretrained_model_path"] = weights["file"]
    metric = pyiqa.create_metric(name, device=device, **kwargs)
    full_ref = getattr(metric, "metric_mode", "FR") == "FR"

    def scores(dist, ref):
        import torch

        with torch.inference_mode():
            out = metric(dist, ref) if full_ref else metric(dist)
        return out.detach().float().cpu().numpy().reshape(-1).astype(np.float64)

    return scores, bool(metric.lower_better), full_ref


def _pyiqa_scores(entry: dict, val: pd.DataFrame, device: str) -> tuple[np.ndarray | None, str]:
    """Scores of one pyiqa metric (negated when lower is better), or None and why not.

    A metric whose weights the user named as a file must work: a missing file is an error, not a
    baseline quietly left out of the tables.
    """
    weights = entry.get("weights")
    if isinstance(weights, dict) and "file" in weights and not Path(weights["file"]).is_file():
        raise InputError(f"evaluate.pyiqa {entry['name']}: weights file {weights['file']} does not exist; "
                         f"copy the metric's published checkpoint there or remove the entry")
    try:
        scores, lower_better, full_ref = _pyiqa_metric(entry, device)
    except ImportError:
        return None, "pyiqa is not installed (pip install pyiqa)"
    except Exception as err:  # noqa: BLE001 - recorded in the report and the log, never silent
        return None, (f"cannot be created ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
                      f"; give its weights as {{file: path}} or put them in pyiqa's cache")
    import torch

    sign = -1.0 if lower_better else 1.0
    out = np.empty(len(val))
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float().div(255).to(device)  # noqa: E731
    refs: dict[str, object] = {}
    for k, (path, src) in enumerate(zip(val["path"], val["src_path"], strict=True)):
        ref = None
        if full_ref:
            if src not in refs:
                refs.clear()  # rows are grouped by source: keep one reference in memory
                refs[src] = to_t(read_image(src))
            ref = refs[src]
        out[k] = sign * float(scores(to_t(read_image(path)), ref)[0])
    return out, "ok"


def baselines(config: dict, task: str, out_path: str) -> pd.DataFrame:
    """HVS / NR-IQA baseline scores of a task's validation images (higher = better quality)."""
    import torch

    from miqd.devices import resolve_device

    torch.set_num_threads(config["evaluate"]["threads"])
    val = _psnr_ssim_from_sources(val_samples(config, task))
    # identical images have infinite PSNR: rank them above every finite value
    finite = val["psnr"][np.isfinite(val["psnr"])]
    val["psnr"] = val["psnr"].replace(np.inf, (finite.max() if len(finite) else 0.0) + 1.0)
    status = {m: "ok" for m in HVS_ALWAYS}
    entries = [m for m in config["evaluate"]["pyiqa"] if m["name"] not in HVS_ALWAYS]
    names = [m["name"] for m in entries]
    device = resolve_device(config["evaluate"]["device"], "evaluate.device") if entries else "cpu"
    for entry in entries:
        name = entry["name"]
        scores, why = _pyiqa_scores(entry, val, device)
        status[name] = why
        if scores is None:
            log.warning("baseline %s on %s: %s", name, task, why)
        else:
            val[name] = scores
    df = val[KEEP + [c for c in names if c in val]].copy()
    df.insert(1, "path", _relative(val["path"], config["outdir"]))
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({BASELINE_STATUS_KEY.decode(): json.dumps(status, sort_keys=True)})
    write_table(out_path, table)
    log.info("baselines of %s val (%d images): %s -> %s", task, len(df),
             ", ".join(f"{k} {'ok' if v == 'ok' else 'not available'}" for k, v in status.items()), out_path)
    return df


def baseline_status(path: str) -> dict[str, str]:
    """{metric: "ok" or why it is missing} of a baselines table (the report lists the missing ones)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(BASELINE_STATUS_KEY, b"{}"))
