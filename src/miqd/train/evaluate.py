"""Evaluation of trained runs and baselines in the paper's layout (§6.1, Tables 5-8, Figs. 8-9).

Three steps, one per rule:
* `evaluate_run`: a run's model.pt scores the validation images of every evaluated task (its
  own, and the others for cross-task generalisation) -> predictions.parquet, summary.csv;
* `baselines`: HVS baselines of a task's validation images: PSNR and SSIM (the label table's,
  computed from the source where a published download lacks them) and pyiqa metrics when
  available -> baselines/<task>.parquet;
* `report`: every table and figure from those files -> evaluate/report/.

Conventions: SRCC and KRCC on the raw scores; PLCC and RMSE after the 5-parameter logistic
mapping (eq. 14) fitted within each evaluated group (a task, a region type, a corruption, a
severity pair); groups with fewer than `MIN_GROUP` images are reported as NaN. Baselines where
lower means better (LPIPS, DISTS) are negated, so that every correlation reads the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from miqd import layout
from miqd.errors import InputError
from miqd.io import read_image, read_table, write_table, write_text
from miqd.correlation import correlations, fit_logistic5, logistic5
from miqd.train import files
from miqd.train.data import LABELS, samples
from miqd.train.networks import model_def

log = logging.getLogger("miqd.evaluate")

MIN_GROUP = 5
HVS_ALWAYS = ("psnr", "ssim")
HVS_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "vsi": "VSI", "lpips": "LPIPS", "dists": "DISTS",
             "hyperiqa": "HyperIQA", "maniqa": "MANIQA"}
TASK_NAMES = {"cls": "Image Classification", "det": "Object Detection", "ins": "Instance Segmentation"}
REGIONS = ("UD", "ROI-DD", "BG-DD")
# Table 8's column order; corruptions it does not name follow in name order
PAPER_CORRUPTIONS = ("contrast", "darkness", "pixelate", "jpeg_compression", "motion_blur", "defocus_blur",
                     "glass_blur", "fog", "snow", "gaussian_noise")
KEEP = ["task", "image_id", "corruption", "roi_level", "bg_level", "region_type", *LABELS, "psnr", "ssim"]


def evaluated_tasks(config: dict) -> list[str]:
    """Validation sets to score runs on: evaluate.tasks (those whose dataset the config has)."""
    tasks = config["evaluate"]["tasks"]
    if config["train"]["source"] == "published":
        return list(tasks)
    return [t for t in tasks if layout.TASK_DATASET[t] in config["sources"]]


def _relative(paths: pd.Series, outdir: str) -> list[str]:
    """Paths under outdir relative to it, so outputs do not depend on where outdir is."""
    root = Path(outdir).resolve()
    out = []
    for p in paths:
        q = Path(p).resolve()
        out.append(q.relative_to(root).as_posix() if q.is_relative_to(root) else str(p))
    return out


def val_samples(config: dict, task: str) -> pd.DataFrame:
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
    tasks = evaluated_tasks(config)
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
        m = _metrics(df["pred"].to_numpy(), df[run["label"]].to_numpy())
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
    table = table.replace_schema_metadata({"miqd.baselines": json.dumps(status, sort_keys=True)})
    write_table(out_path, table)
    log.info("baselines of %s val (%d images): %s -> %s", task, len(df),
             ", ".join(f"{k} {'ok' if v == 'ok' else 'not available'}" for k, v in status.items()), out_path)
    return df


def _random_label_models(config: dict, task: str) -> list[str]:
    """The random-weight models behind a task's labels (this workflow's label tables only)."""
    import pyarrow.parquet as pq

    if config["train"]["source"] == "published":
        return []
    shards = layout.shard_ids(config["sources"][layout.TASK_DATASET[task]]["shards"])
    meta = pq.read_schema(layout.label_table(config["outdir"], task, shards[0])).metadata or {}
    return json.loads(meta.get(b"miqd.random_models", b"[]"))


def baseline_status(path: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"miqd.baselines", b"{}"))


# ---------------------------------------------------------------------------------------------
# metrics over groups


def _metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    n = int(len(pred))
    if n < MIN_GROUP or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return {"n": n, "srcc": np.nan, "plcc": np.nan, "krcc": np.nan,
                "rmse": float(np.sqrt(np.mean((pred - target) ** 2))) if n and np.ptp(pred) == 0 else np.nan}
    c = correlations(pred, target, fit=True)
    return {"n": n, "srcc": c["srcc"], "plcc": c["plcc"], "krcc": c["krcc"], "rmse": c["rmse"]}


def _methods(runs: list[dict], base: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame]):
    """(method name, kind, {test task: (scores frame, score column)}, label or None)."""
    out = []
    extra = [c for df in base.values() for c in df.columns if c not in KEEP and c != "path"]
    hvs = list(dict.fromkeys([*HVS_ALWAYS, *extra]))
    for name in hvs:
        out.append((HVS_NAMES.get(name, name), "HVS-based",
                    {t: (df, name) for t, df in base.items() if name in df}, None))
    for run in runs:
        rn = files.run_name(run)
        if rn not in preds:
            continue
        df = preds[rn]
        own = df[df["task"] == run["task"]]
        out.append((model_def(run["model"]).paper_name, "Machine-based", {run["task"]: (own, "pred")}, run))
    return out


def _row(frames: dict, task: str, label: str, select=None) -> dict:
    df, col = frames[task]
    if select is not None:
        df = df[select(df)]
    return _metrics(df[col].to_numpy(np.float64), df[label].to_numpy(np.float64))


def tables(runs: list[dict], base: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Long-format tables 5-8, severity pairs (Fig. 9) and cross-task (Fig. 8)."""
    methods = _methods(runs, base, preds)
    t5, t6, t7, t8, sev = [], [], [], [], []
    for name, kind, frames, run in methods:
        for task in frames:
            labels = LABELS if run is None else (run["label"],)
            for label in labels:
                m = _row(frames, task, label)
                rec = {"method": name, "category": kind, "task": task, "label": label}
                if label == "composite":
                    t5.append(rec | m)
                    for region in REGIONS:
                        t7.append(rec | {"region_type": region}
                                  | _row(frames, task, label, lambda d, r=region: d["region_type"] == r))
                    if run is not None:
                        df = frames[task][0]
                        names = set(df["corruption"])
                        for c in [c for c in PAPER_CORRUPTIONS if c in names] + sorted(names - set(PAPER_CORRUPTIONS)):
                            t8.append(rec | {"corruption": c}
                                      | _row(frames, task, label, lambda d, c=c: d["corruption"] == c))
                else:
                    t6.append(rec | m)
                if run is not None:
                    df = frames[task][0]
                    for (r, b), _ in df.groupby(["roi_level", "bg_level"]):
                        sev.append(rec | {"run": files.run_name(run), "region_type": layout.region_type(r, b),
                                          "roi_level": r, "bg_level": b}
                                   | _row(frames, task, label,
                                          lambda d, r=r, b=b: (d["roi_level"] == r) & (d["bg_level"] == b)))
    cross = []
    for run in runs:
        rn = files.run_name(run)
        if rn not in preds:
            continue
        df = preds[rn]
        for task in dict.fromkeys(df["task"]):
            part = df[df["task"] == task]
            cross.append({"method": model_def(run["model"]).paper_name, "run": rn, "label": run["label"],
                          "train_task": run["task"], "test_task": task}
                         | _metrics(part["pred"].to_numpy(), part[run["label"]].to_numpy()))
    cols = ["n", "srcc", "plcc", "krcc", "rmse"]
    frame = lambda rows, keys: pd.DataFrame(rows, columns=keys + cols)  # noqa: E731
    base_keys = ["method", "category", "task", "label"]
    return {
        "table5": frame(t5, base_keys),
        "table6": frame(t6, base_keys),
        "table7": frame(t7, base_keys + ["region_type"]),
        "table8": frame(t8, base_keys + ["corruption"]),
        "severity": frame(sev, base_keys + ["run", "region_type", "roi_level", "bg_level"]),
        "cross_task": frame(cross, ["method", "run", "label", "train_task", "test_task"]),
    }


# ---------------------------------------------------------------------------------------------
# layout: the paper's wide tables in Markdown


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(v)
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def _markdown(df: pd.DataFrame, index: list[str]) -> str:
    head = "| " + " | ".join(index + [str(c) for c in df.columns]) + " |"
    sep = "|" + "---|" * len(index) + "---:|" * len(df.columns)
    lines = [head, sep]
    for key, row in df.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        lines.append("| " + " | ".join([str(k) for k in key] + [_fmt(v) for v in row]) + " |")
    return "\n".join(lines)


def _wide(long: pd.DataFrame, index: list[str], columns: list[str], metrics: list[str]) -> pd.DataFrame:
    """Rows `index`, columns `columns` x `metrics`, both in order of first appearance."""
    if long.empty:
        return pd.DataFrame()
    wide = long.set_index(index + columns)[metrics].unstack(columns)
    wide = wide.reorder_levels(list(range(1, len(columns) + 1)) + [0], axis=1)
    cols = [tuple(c) for c in long[columns].drop_duplicates().itertuples(index=False)]
    rows = list(dict.fromkeys(long[index].itertuples(index=False, name=None)))
    wide = wide.loc[rows if len(index) > 1 else [r[0] for r in rows], [(*c, m) for c in cols for m in metrics]]
    wide.columns = [" ".join([*map(str, c[:-1]), c[-1].upper()]) for c in wide.columns]
    return wide


def markdown_report(t: dict[str, pd.DataFrame], notes: list[str]) -> str:
    t5 = t["table5"]
    parts = ["# Evaluation (paper §6, Tables 5-8, Figs. 8-9)", "", *notes, "",
             "SRCC and KRCC on the raw scores; PLCC and RMSE after the 5-parameter logistic mapping "
             "(eq. 14) fitted within each group; – = undefined (constant scores or labels, or fewer "
             f"than {MIN_GROUP} images).", ""]
    sections = [
        ("Table 5: composite score", _wide(t5, ["category", "method"], ["task"], ["srcc", "plcc", "krcc", "rmse"])),
        ("Table 6: accuracy and consistency scores",
         _wide(t["table6"], ["method"], ["task", "label"], ["srcc", "plcc", "rmse"])),
        ("Table 7: degradation regions (composite)",
         _wide(t["table7"], ["category", "method"], ["task", "region_type"], ["srcc", "plcc"])),
        ("Table 8: degradation types (composite)",
         _wide(t["table8"], ["task", "method"], ["corruption"], ["srcc", "plcc"])),
        ("Fig. 9: PLCC per severity pair (ROI level, background level)",
         _wide(t["severity"].sort_values(["bg_level", "roi_level"], kind="stable"), ["run", "roi_level"],
               ["bg_level"], ["plcc"])),
        ("Fig. 8: cross-task generalisation (rows: training task; columns: test task)",
         _wide(t["cross_task"], ["run", "train_task"], ["test_task"], ["srcc", "plcc"])),
    ]
    for title, wide in sections:
        parts += [f"## {title}", ""]
        parts += [_markdown(wide, list(wide.index.names)) if not wide.empty else "(no runs with this label)", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# figures


def _heatmap(ax, matrix: pd.DataFrame, title: str, vmin=0.0, vmax=1.0):
    im = ax.imshow(matrix.to_numpy(np.float64), vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix.iat[i, j]
            ax.text(j, i, _fmt(v), ha="center", va="center", color="white" if not np.isnan(v) and v < 0.6 else "black",
                    fontsize=8)
    ax.set_title(title, fontsize=9)
    return im


def _panels(keys: list, draw, path: str) -> None:
    """One row of panels, one per key; `draw(ax, key)` returns False for a panel with nothing in it."""
    from miqd.plots import plt, save_figure  # noqa: I001 - miqd.plots selects the Agg backend

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        if draw(ax, key) is False:
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def figures(t: dict[str, pd.DataFrame], preds: dict[str, pd.DataFrame], runs: list[dict], out: dict) -> None:
    cross, sev = t["cross_task"], t["severity"]

    def cross_task(ax, key):
        method, label = key
        part = cross[(cross["method"] == method) & (cross["label"] == label)]
        if part.empty:
            return False
        m = part.pivot_table(index="train_task", columns="test_task", values="srcc", aggfunc="first", dropna=False)
        _heatmap(ax, m, f"{method} ({label}): SRCC")
        ax.set_xlabel("test task")
        ax.set_ylabel("training task")

    def severity(ax, run_name):
        part = sev[sev["run"] == run_name]
        if part.empty:
            return False
        m = part.pivot_table(index="roi_level", columns="bg_level", values="plcc", aggfunc="first", dropna=False)
        _heatmap(ax, m, f"{run_name}: PLCC")
        ax.set_xlabel("background level")
        ax.set_ylabel("ROI level")

    def scatter(ax, run):
        if run is None:
            return False
        df = preds[files.run_name(run)]
        df = df[df["task"] == run["task"]]
        x, y = df["pred"].to_numpy(), df[run["label"]].to_numpy()
        ax.scatter(x, y, s=4, alpha=0.4)
        if len(x) >= MIN_GROUP and np.ptp(x) > 0:
            q = np.linspace(x.min(), x.max(), 200)
            ax.plot(q, logistic5(q, *fit_logistic5(x, y)), color="#DD8452", label="logistic fit (eq. 14)")
            ax.legend(fontsize=7)
        ax.set_xlabel("predicted score")
        ax.set_ylabel(f"{run['label']} label")
        ax.set_title(f"{files.run_name(run)} on {run['task']} val", fontsize=9)

    _panels(list(dict.fromkeys(zip(cross["method"], cross["label"]))) or [("none", "composite")], cross_task,
            out["cross_task_png"])
    _panels(list(dict.fromkeys(sev["run"])) or ["none"], severity, out["severity_png"])
    _panels([r for r in runs if files.run_name(r) in preds] or [None], scatter, out["scatter_png"])


def report(config: dict, prediction_paths: list[str], baseline_paths: list[str]) -> dict[str, pd.DataFrame]:
    """Every table (CSV long format + report.md in the paper's layout) and figure."""
    outdir = config["outdir"]
    runs = config["train"]["runs"]
    preds = {Path(p).parent.name: read_table(p) for p in prediction_paths}
    base, notes = {}, []
    for p in baseline_paths:
        task = Path(p).stem
        base[task] = read_table(p)
        for name, why in baseline_status(p).items():
            if why != "ok":
                notes.append(f"- baseline {HVS_NAMES.get(name, name)} on {task}: not available — {why}")
    for p in prediction_paths:
        summary = Path(files.evaluate_outputs(str(Path(p).parents[2]), Path(p).parent.name)["summary"])
        first = pd.read_csv(summary, keep_default_na=False).iloc[0]
        note = f"- {first['run']}: backbone {first['backbone_init']}"
        if first["region_init"]:
            note += f"; region encoder {first['region_init']}"
        notes.append(note + f"; best validation step {first['best_step']}")
    source = config["train"]["source"]
    notes.insert(0, f"- data: {'the published MIQD-2.5M download' if source == 'published' else 'this workflow'}"
                    f" ({outdir}); validation split of each task")
    for task, df in base.items():
        notes.append(f"- {task}: {df['image_id'].nunique()} validation sources, {len(df)} distorted images")
        random = _random_label_models(config, task)
        if random:
            notes.append(f"- {task}: the labels come from models with random weights ({', '.join(random)}): "
                         f"these numbers are NOT real (the embedded demo)")
        for label in LABELS:
            if len(df) and np.ptp(df[label].to_numpy()) == 0:
                notes.append(f"- {task}: every validation {label} label is {df[label].iloc[0]:.4g}; its "
                             f"correlations are undefined (–)")
    t = tables(runs, base, preds)
    out = files.report_outputs(outdir)
    for name, df in t.items():
        write_text(out[f"{name}_csv"], df.to_csv(index=False, float_format="%.6g"))
    write_text(out["markdown"], markdown_report(t, notes))
    figures(t, preds, runs, out)
    log.info("report of %d run(s) and %d baseline table(s) -> %s", len(preds), len(base), out["markdown"])
    return t
