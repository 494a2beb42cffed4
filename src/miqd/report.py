"""One HTML page that shows what a run produced: distortions, labels, their validation, splits, training.

Everything is read from the run's outputs by their `miqd.layout` paths (the rule declares the
same files as inputs); figures are embedded, so the page is a single self-contained file. Tables
go through `miqd.evaluation.render`, the formatter report.md uses too, so a missing value reads
"–" everywhere. The page is a function of its inputs: its date is the newest input's
modification time, not the time it was built.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from miqd import layout
from miqd.evaluation import render
from miqd.evaluation.tables import Table
from miqd.io import write_text
from miqd.plots import TASK_TITLES, label_density_figure, mmos_heatmap_figure

log = logging.getLogger("miqd.report")

# the config files the workflow was started with (the report rule sets it; space-separated)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #4C72B0; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f3f8; } .key { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; margin-top: 0.3em; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em; }
.note { color: #555; font-size: 0.9em; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; overflow-wrap: anywhere; }
nav.contents { background: #f7f8fb; border: 1px solid #dde; padding: 0.4em 1em; margin: 1em 0; }
nav.contents ul { margin: 0.2em 0; }
"""


@dataclass
class Page:
    """The page being built: its parts, its headings (for the contents list), the files it read."""

    fig_dir: Path
    parts: list[str] = field(default_factory=list)
    headings: list[tuple[int, str, str]] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    open_levels: list[int] = field(default_factory=list)

    def heading(self, level: int, title: str, anchor: str | None = None) -> str:
        """A heading opening a <section> with a unique id (the contents list links to it).

        It closes the open sections of its level and below, so headings must reach the page in
        the order they are made; `body` closes the rest.
        """
        base = re.sub(r"[^a-z0-9]+", "-", (anchor or title).lower()).strip("-") or "section"
        anchor, k = base, 2
        while any(a == anchor for _, a, _ in self.headings):
            anchor, k = f"{base}-{k}", k + 1
        self.headings.append((level, anchor, title))
        closing = ""
        while self.open_levels and self.open_levels[-1] >= level:
            self.open_levels.pop()
            closing += "</section>"
        self.open_levels.append(level)
        return f"{closing}<section id='{anchor}'><h{level}>{render.text(title)}</h{level}>"

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def read(self, path: str | Path) -> str:
        """`path`, recorded as an input of the page (its date is the newest input's)."""
        self.inputs.append(Path(path))
        return str(path)

    def figure(self, path: str | Path, caption: str) -> str:
        """An embedded PNG with its caption; one drawn for the page (in `fig_dir`) is not an input."""
        if not Path(path).is_relative_to(self.fig_dir):
            self.read(path)
        data = base64.b64encode(Path(path).read_bytes()).decode()
        return render.html_figure(f"data:image/png;base64,{data}", caption)

    def contents(self) -> str:
        """Links to every section, those of level 3 and below nested under the one before."""
        items: list[tuple[str, list[str]]] = []
        for level, anchor, title in self.headings:
            link = f"<a href='#{anchor}'>{render.text(title)}</a>"
            if level <= 2 or not items:
                items.append((link, []))
            else:
                items[-1][1].append(link)
        lis = "".join(f"<li>{link}" + (f"<ul>{''.join(f'<li>{s}</li>' for s in subs)}</ul>" if subs else "")
                      + "</li>" for link, subs in items)
        return f"<nav class='contents'><strong>Contents</strong><ul>{lis}</ul></nav>"

    def body(self) -> str:
        """Every part, the open sections closed."""
        return "".join(self.parts) + "</section>" * len(self.open_levels)


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    return render.html_table(Table.from_frame(frame, digits=digits))


def _label_tables(page: Page, outdir: str, task: str, shards: list[str]) -> tuple[pd.DataFrame, dict]:
    """A task's labels, and what its label tables say about the models behind them."""
    paths = [page.read(layout.label_table(outdir, task, s)) for s in shards]
    columns = ["image_id", "corruption", "roi_level", "bg_level", "region_type", "consistency", "accuracy",
               "composite"]
    frame = pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in paths], ignore_index=True)
    meta = pq.read_schema(paths[0]).metadata or {}
    info = {key: json.loads(meta.get(f"miqd.{key}".encode(), default))
            for key, default in (("random_models", b"[]"), ("alpha", b"{}"), ("lambda", b"null"))}
    return frame, info


# ---------------------------------------------------------------------------------------------
# sections


def _distortions(page: Page, outdir: str, datasets: list[str]) -> None:
    page.add(page.heading(2, "Distortions"))
    for dataset in datasets:
        figs = layout.distort_figures(outdir, dataset)
        manifest = pq.read_table(page.read(layout.distort_manifest_merged(outdir, dataset)), columns=["image_id"])
        n = manifest.column("image_id").to_pandas().nunique()
        title = f"{dataset}: {render.plural(n, 'source')}, {render.plural(manifest.num_rows, 'distorted image')}"
        page.add(page.heading(3, title),
                 page.figure(figs["quality"], f"{dataset}: PSNR and SSIM of each distorted image to its source, "
                                              f"per corruption and region type (paper Fig. 5)."),
                 page.figure(figs["examples"], f"{dataset}: one source under every corruption (rows); columns: "
                                               f"the whole image distorted at levels 1-5 (UD), then the ROI more "
                                               f"than the background (ROI-DD, levels 5 and 1) and the reverse "
                                               f"(BG-DD, 1 and 5)."))


def _labels(page: Page, labels: dict[str, pd.DataFrame]) -> None:
    page.add(page.heading(2, "Labels (MMOS)"))
    kinds = ["consistency", "accuracy", "composite"]
    summary = pd.DataFrame([{"task": t, "images": len(f), **{k: f[k].mean() for k in kinds}}
                            for t, f in labels.items()])
    by_region = pd.concat([f.groupby("region_type")[kinds].mean().assign(task=t).reset_index()
                           for t, f in labels.items()], ignore_index=True)
    page.add("<p>Mean label per task.</p>", _table(summary),
             "<p>Mean label by region type.</p>", _table(by_region[["task", "region_type", *kinds]]))
    density = page.fig_dir / "label_density.png"
    label_density_figure(labels, str(density))
    page.add(page.heading(3, "Consistency vs accuracy (paper Fig. 4)"),
             page.figure(density, "Consistency against accuracy label of every distorted image, per task "
                                  "(paper Fig. 4); colour: images per hexagon (log scale); dashed: equal labels."))
    page.add(page.heading(3, "MMOS by (ROI, background) level per corruption (paper Fig. 6)"))
    for task, frame in labels.items():
        heat = page.fig_dir / f"mmos_heatmap_{task}.png"
        mmos_heatmap_figure(frame, task, str(heat))
        page.add(page.figure(heat, f"{TASK_TITLES.get(task, task)}: mean label per (ROI level, background "
                                   f"level) pair, per corruption (columns) and label type (rows) (paper Fig. 6)."))


def _notes(md_path: str) -> list[str]:
    """The bullet notes of a stage's Markdown table (what it says about its numbers)."""
    return [ln[2:] for ln in Path(md_path).read_text().splitlines() if ln.startswith("- ")]


def _validation(page: Page, outdir: str) -> None:
    files = layout.validation_table(outdir)
    table = pd.read_csv(page.read(files["csv"]))
    page.add(page.heading(2, "Label validation (paper Table 4)"), _table(table),
             render.html_notes(_notes(page.read(files["md"]))),
             page.figure(files["plot"], "SRCC, PLCC and RMSE of every validation trial (labels recomputed "
                                        "from a random 80/20 partition of the models, one part against the "
                                        "other), per task and label type: the spread behind Table 4."))


def _comparison(page: Page, outdir: str) -> None:
    files = layout.compare_outputs(outdir)
    table = pd.read_csv(page.read(files["csv"]))
    page.add(page.heading(2, "Regenerated vs published labels"), render.html_notes(_notes(page.read(files["md"]))),
             _table(table[table["by"] == "all"].drop(columns=["by", "group"]), 4),
             "<p>Per corruption and region type (composite).</p>",
             _table(table[(table["by"] != "all") & (table["label"] == "composite")], 4),
             page.figure(files["png"], "Our regenerated labels (x) against the published MIQD-2.5M labels (y), "
                                       "per task and label type, coloured by region type; dashed: equal."))


def _worst_class(bal: pd.DataFrame) -> str:
    """The class whose train fraction is furthest from the target: id, name where known, size."""
    k = bal["deviation"].abs().idxmax()
    cls, name = bal.at[k, "class"], str(bal.at[k, "name"]).strip()
    label = f"class {int(cls) if float(cls).is_integer() else cls}" + (f" ({name})" if name else "")
    return f"{label}, {render.plural(int(bal.at[k, 'images']), 'image')}, {bal.at[k, 'train_fraction']:.3f}"


def _splits(page: Page, outdir: str, datasets: list[str]) -> None:
    page.add(page.heading(2, "Train / val splits"))
    for dataset in datasets:
        split = pq.read_table(page.read(layout.split_table(outdir, dataset)), columns=["split"]).to_pandas()
        bal = pd.read_csv(page.read(layout.split_balance(outdir, dataset)), keep_default_na=False)
        n_train, n_val = int((split.split == "train").sum()), int((split.split == "val").sum())
        page.add(f"<p>{render.text(dataset)}: {n_train} train, {n_val} val "
                 f"{'source' if n_val == 1 else 'sources'}; {render.plural(len(bal), 'class')}, train fraction "
                 f"{bal.train_fraction.min():.3f}–{bal.train_fraction.max():.3f} "
                 f"(worst: {render.text(_worst_class(bal))}).</p>")


def _training(page: Page, outdir: str, train_runs: list[str]) -> None:
    from miqd.evaluation.stage import load_document
    from miqd.train import files as train_files

    page.add(page.heading(2, "RA-MIQA and baselines: training"))
    for run in train_runs:
        page.add(page.heading(3, run),
                 page.figure(train_files.train_outputs(outdir, run)["plot"],
                             f"{run}: training loss (left axis) and validation SRCC (right axis) by step."))
    evaluation = train_files.report_outputs(outdir)
    doc = load_document(page.read(evaluation["tables"]))
    folder = Path(evaluation["tables"]).parent

    def image_src(name: str) -> str:
        data = base64.b64encode(Path(page.read(folder / name)).read_bytes()).decode()
        return f"data:image/png;base64,{data}"

    page.add(page.heading(2, "Evaluation (paper Tables 5-8, Figs. 8-9)"),
             render.html_document(doc, page.heading, image_src))


# ---------------------------------------------------------------------------------------------
# provenance


def _code_version() -> str:
    """The git commit of the code that built the page, or the package version outside a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    import miqd

    pkg = Path(miqd.__file__).resolve().parent
    git = lambda *a: subprocess.run(["git", "-C", str(pkg), *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=30, check=False)
    try:
        head, tracked = git("rev-parse", "HEAD"), git("ls-files", "--error-unmatch", "__init__.py")
        if head.returncode == 0 and tracked.returncode == 0:
            dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
            return f"git commit {head.stdout.strip()}" + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return f"miqd {version('miqd')} (not a git checkout)"
    except PackageNotFoundError:
        return "unknown (neither a git checkout nor an installed package)"


def _config_files(names: list[str]) -> str:
    if not names:
        return "not recorded (the page was built outside the workflow)"
    out = []
    for name in names:
        p = Path(name)
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.is_file() else "missing now"
        out.append(f"{name} (sha256 {digest})")
    return ", ".join(out)


def _label_models(info: dict[str, dict]) -> list[str]:
    """One line per task: its label models with their weights α, λ, and those with random weights."""
    if not info:
        return ["none (no label tables on this page)"]
    out = []
    for task, meta in info.items():
        models = ", ".join(f"{m} (α {a:.3g})" for m, a in meta["alpha"].items()) or "not recorded"
        random = f"; random weights: {', '.join(meta['random_models'])}" if meta["random_models"] else ""
        lam = f"; λ {meta['lambda']}" if meta["lambda"] is not None else ""
        out.append(f"{task}: {models}{lam}{random}")
    return out


def _provenance(page: Page, outdir: str, info: dict[str, dict], config_files: list[str]) -> str:
    """Where the page's numbers come from: outdir, config files, code, date of the inputs, label models."""
    newest = max((p.stat().st_mtime for p in page.inputs if p.exists()), default=None)
    date = ("no inputs" if newest is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(newest))
            + " (the newest input file's modification time)")
    rows = [("Output folder", [outdir]), ("Config files", [_config_files(config_files)]), ("Code", [_code_version()]),
            ("Results as of", [date]), ("Label models", _label_models(info))]
    return "<dl class='provenance'>" + "".join(
        f"<dt>{render.text(k)}</dt><dd>{'<br>'.join(render.text(v) for v in lines)}</dd>" for k, lines in rows
    ) + "</dl>"


# ---------------------------------------------------------------------------------------------
# the page


def build(outdir: str, datasets: list[str], tasks: dict[str, list[str]], validated: bool, out_path: str,
          train_runs: list[str] | None = None, compared: bool = False, config_files: list[str] | None = None) -> None:
    """`tasks`: {task: its shard ids}; `train_runs`: the stage-8 runs whose curves and evaluation to show;
    `compared`: show the regenerated-vs-published label comparison (`miqd compare-labels`);
    `config_files`: the config files the workflow was started with, named in the provenance block."""
    with tempfile.TemporaryDirectory() as tmp:  # the page embeds its figures: no other output files
        page = _page(outdir, datasets, tasks, validated, train_runs, Path(tmp), compared, config_files or [])
    write_text(out_path, page)
    log.info("report: %s", out_path)


def _page(outdir: str, datasets: list[str], tasks: dict[str, list[str]], validated: bool,
          train_runs: list[str] | None, fig_dir: Path, compared: bool = False,
          config_files: list[str] | None = None) -> str:
    page = Page(fig_dir)
    if datasets:
        _distortions(page, outdir, datasets)
    labels, info, warnings = {}, {}, []
    for task, shards in tasks.items():
        labels[task], info[task] = _label_tables(page, outdir, task, shards)
        if info[task]["random_models"]:
            warnings.append(f"{TASK_TITLES[task]}: models {', '.join(info[task]['random_models'])} have random "
                            f"weights — their scores, and the labels, validation and training built on them, "
                            f"are NOT real.")
    if labels:
        _labels(page, labels)
    if validated:
        _validation(page, outdir)
    if compared:
        _comparison(page, outdir)
    if datasets:
        _splits(page, outdir, datasets)
    if train_runs:
        _training(page, outdir, train_runs)
    head = [f"<h1>miqd run: {render.text(outdir)}</h1>",
            *(f'<p class="warn">{render.text(w)}</p>' for w in warnings),
            _provenance(page, outdir, info, config_files or []), page.contents()]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>miqd report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(head)}{page.body()}</body></html>\n")
