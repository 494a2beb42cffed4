"""One HTML page that shows what a run produced: distortions, labels, their validation, splits, training.

Everything is read from the run's outputs by their `miqd.layout` paths (the rule declares the
same files as inputs); figures are embedded, so the page is a single self-contained file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from miqd import layout
from miqd.io import write_text
from miqd.plots import TASK_TITLES, label_density_figure, mmos_heatmap_figure

log = logging.getLogger("miqd.report")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #4C72B0; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: right; } th { background: #f0f3f8; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em; }
.note { color: #555; font-size: 0.9em; }
"""


def _img(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    return frame.to_html(index=False, float_format=lambda v: floats.format(v), border=0)


def _label_tables(outdir: str, task: str, shards: list[str]) -> tuple[pd.DataFrame, list[str]]:
    paths = [layout.label_table(outdir, task, s) for s in shards]
    columns = ["image_id", "corruption", "roi_level", "bg_level", "region_type", "consistency", "accuracy",
               "composite"]
    frame = pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in paths], ignore_index=True)
    random = json.loads((pq.read_schema(paths[0]).metadata or {}).get(b"miqd.random_models", b"[]"))
    return frame, random


def _markdown(text: str) -> str:
    """The subset of Markdown the evaluation report uses: headings, pipe tables, bullets, paragraphs."""
    out, table = [], []

    def flush():
        if table:
            rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table
                    if not set(ln.replace("|", "").strip()) <= set("-: ")]
            head, body = rows[0], rows[1:]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<p class='note'>{html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


def build(outdir: str, datasets: list[str], tasks: dict[str, list[str]], validated: bool, out_path: str,
          train_runs: list[str] | None = None, compared: bool = False) -> None:
    """`tasks`: {task: its shard ids}; `train_runs`: the stage-8 runs whose curves and evaluation to show;
    `compared`: show the regenerated-vs-published label comparison (`miqd compare-labels`)."""
    with tempfile.TemporaryDirectory() as tmp:  # the page embeds its figures: no other output files
        page = _page(outdir, datasets, tasks, validated, train_runs, Path(tmp), compared)
    write_text(out_path, page)
    log.info("report: %s", out_path)


def _page(outdir: str, datasets: list[str], tasks: dict[str, list[str]], validated: bool,
          train_runs: list[str] | None, fig_dir: Path, compared: bool = False) -> str:
    parts = [f"<h1>miqd run: {html.escape(outdir)}</h1>"]

    parts.append("<h2>Distortions</h2>")
    for dataset in datasets:
        figs = layout.distort_figures(outdir, dataset)
        manifest = pq.read_table(layout.distort_manifest_merged(outdir, dataset), columns=["image_id"])
        parts.append(f"<h3>{dataset}: {manifest.column('image_id').to_pandas().nunique()} sources, "
                     f"{manifest.num_rows} distorted images</h3>")
        parts.append(_img(figs["quality"], f"{dataset} PSNR/SSIM") + _img(figs["examples"], f"{dataset} examples"))

    labels, warnings = {}, []
    for task, shards in tasks.items():
        labels[task], random = _label_tables(outdir, task, shards)
        if random:
            warnings.append(f"{TASK_TITLES[task]}: models {', '.join(random)} have random weights — "
                            f"their scores, and the labels, validation and training built on them, are NOT real.")
    if warnings:
        parts.insert(1, "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings))

    if labels:
        parts.append("<h2>Labels (MMOS)</h2>")
        summary = pd.DataFrame([{"task": t, "images": len(f), **{k: f[k].mean() for k in
                                                                   ("consistency", "accuracy", "composite")}}
                                for t, f in labels.items()])
        parts.append("<p>Mean label per task.</p>" + _table(summary))
        by_region = pd.concat([f.groupby("region_type")[["consistency", "accuracy", "composite"]].mean()
                               .assign(task=t).reset_index() for t, f in labels.items()], ignore_index=True)
        parts.append("<p>Mean label by region type.</p>" + _table(by_region[["task", "region_type", "consistency",
                                                                             "accuracy", "composite"]]))
        density = fig_dir / "label_density.png"
        label_density_figure(labels, str(density))
        parts.append("<h3>Consistency vs accuracy (paper Fig. 4)</h3>" + _img(density, "density"))
        parts.append("<h3>MMOS by (ROI, background) level per corruption (paper Fig. 6)</h3>")
        for task, frame in labels.items():
            heat = fig_dir / f"mmos_heatmap_{task}.png"
            mmos_heatmap_figure(frame, task, str(heat))
            parts.append(_img(heat, f"{task} heatmap"))

    if validated:
        files = layout.validation_table(outdir)
        table = pd.read_csv(files["csv"])
        notes = [ln[2:] for ln in Path(files["md"]).read_text().splitlines() if ln.startswith("- ")]
        parts.append("<h2>Label validation (paper Table 4)</h2>" + _table(table)
                     + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes) + _img(files["plot"], "trials"))

    if compared:
        files = layout.compare_outputs(outdir)
        table = pd.read_csv(files["csv"])
        notes = [ln[2:] for ln in Path(files["md"]).read_text().splitlines() if ln.startswith("- ")]
        parts.append("<h2>Regenerated vs published labels</h2>"
                     + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
                     + _table(table[table["by"] == "all"].drop(columns=["by", "group"]), "{:.4f}")
                     + "<p>Per corruption and region type (composite).</p>"
                     + _table(table[(table["by"] != "all") & (table["label"] == "composite")], "{:.4f}")
                     + _img(files["png"], "ours vs published"))

    parts.append("<h2>Train / val splits</h2>")
    for dataset in datasets:
        split = pq.read_table(layout.split_table(outdir, dataset), columns=["split"]).to_pandas()
        bal = pd.read_csv(layout.split_balance(outdir, dataset))
        worst = bal.loc[bal["deviation"].abs().idxmax()]
        parts.append(f"<p>{dataset}: {int((split.split == 'train').sum())} train, "
                     f"{int((split.split == 'val').sum())} val sources; {len(bal)} classes, train fraction "
                     f"{bal.train_fraction.min():.3f}–{bal.train_fraction.max():.3f} (worst: class {worst['class']}, "
                     f"{int(worst.images)} images, {worst.train_fraction:.3f}).</p>")

    if train_runs:
        from miqd.train import files as train_files

        parts.append("<h2>RA-MIQA and baselines: training</h2>")
        for run in train_runs:
            parts.append(f"<h3>{html.escape(run)}</h3>" + _img(train_files.train_outputs(outdir, run)["plot"], run))
        evaluation = train_files.report_outputs(outdir)
        parts.append("<h2>Evaluation (paper Tables 5-8, Figs. 8-9)</h2>")
        parts.append(_markdown(Path(evaluation["markdown"]).read_text()))
        for key in ("cross_task_png", "severity_png", "scatter_png"):
            parts.append(_img(evaluation[key], key))

    return (f"<!doctype html><html><head><meta charset='utf-8'><title>miqd report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
