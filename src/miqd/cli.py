"""`miqd`: one thin subcommand per stage; the Snakemake rules call these, and so can you."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from miqd import __version__
from miqd import config as cfgmod
from miqd.errors import InputError


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True,
        help="YAML config file, or inline JSON (what the Snakemake rules pass)",
    )


def _stage_config(args) -> dict:
    from miqd.io import set_max_pixels

    config = cfgmod.load(args.config, whole_workflow=False)
    set_max_pixels(config["max_source_pixels"])
    return config


def cmd_demo_sources(args) -> None:
    from miqd.sources import materialize_demo

    written = materialize_demo(args.spec, args.out)
    logging.getLogger("miqd").info("wrote %d demo images to %s", len(written), args.out)


def _with_threads(config: dict, section: str, dataset: str, threads: int | None) -> dict:
    if threads is not None and dataset in config[section]:
        config[section][dataset]["threads"] = threads
    return config


def cmd_select(args) -> None:
    from miqd import select

    config = _with_threads(_stage_config(args), "select", args.dataset, args.threads)
    select.run(config, args.dataset, int(args.shard), args.out)


def cmd_roi(args) -> None:
    from miqd import roi

    config = _with_threads(_stage_config(args), "roi", args.dataset, args.threads)
    roi.run(config, args.dataset, args.sources, args.out)


def cmd_distort(args) -> None:
    from miqd.distort import engine

    config = _stage_config(args)
    settings = engine.DistortSettings.from_config(config)
    engine.run(args.sources, args.masks, args.manifest, args.levels, args.dataset,
               config["outdir"], settings, workers=args.workers, seal_path=args.seal)


def cmd_merge(args) -> None:
    from miqd.distort.engine import merge_manifests

    merge_manifests(args.inputs, args.out)


def cmd_infer(args) -> None:
    from miqd.models import infer
    from miqd.models.registry import load_registry

    config = _stage_config(args)
    specs = [s for s in load_registry(args.models) if s.group == args.group and s.task == args.task]
    if not specs:
        raise InputError(f"no model of task {args.task} in group {args.group!r} in --models")
    settings = infer.InferSettings.from_config(config, workers=args.workers, threads=args.threads)
    infer.run(args.task, args.shard, specs, args.sources, args.manifest, args.out, config["outdir"], settings)


def cmd_models(args) -> None:
    from miqd.models import check, fetch

    code = {"check": check.check, "list": check.list_models, "fetch": fetch.fetch}[args.action](
        args.registry, args.task)
    if code:
        raise SystemExit(code)


def cmd_label(args) -> None:
    from miqd.label import stage

    config = _stage_config(args)
    stage.run(args.task, _models_arg(args.models), args.indexes, args.manifest, args.sources,
              args.annotations, args.out, stage.LabelSettings.from_config(config))


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


def cmd_export_labels(args) -> None:
    from miqd.label.export import additional_info, export

    if args.additional_info:
        additional_info(args.additional_info, args.out)
        return
    if not args.task or not args.labels:
        raise InputError("export-labels needs --task and label tables (or --additional-info ANNOTATIONS)")
    export(args.task, args.labels, args.out)


def cmd_compare_labels(args) -> None:
    from miqd.label.compare import compare

    tasks = args.tasks or [t for t in ("cls", "det", "ins") if list((Path(args.outdir) / "label" / t).glob("*.parquet"))]
    if not tasks:
        raise InputError(f"no label tables under {Path(args.outdir) / 'label'}; is --outdir the run's outdir?")
    table = compare(args.outdir, args.published, tasks)
    overall = table[table["by"] == "all"]
    for r in overall.itertuples():
        print(f"{r.task:4s} {r.label:12s} n={r.n:<8d} SRCC {r.srcc:.4f}  PLCC {r.plcc:.4f}")


def cmd_validate(args) -> None:
    from miqd.label import validate

    config = _stage_config(args)
    v, lab = config["validate"], config["label"]
    validate.run(args.task, args.labels, _models_arg(args.models), lam=lab["lambda"], weights=lab["weights"],
                 n_trials=v["trials"], fraction=v["fraction"], seed=config["seed"], out_path=args.out)


def cmd_validation_table(args) -> None:
    from miqd.label.validate import write_table4

    write_table4(args.trials, args.csv, args.md, args.plot)


def cmd_split(args) -> None:
    from miqd.label import split

    config = _stage_config(args)
    split.run(args.dataset, args.sources, config["split"]["val_fraction"], config["seed"], args.out,
              args.balance, {"train": args.upstream_train, "val": args.upstream_val})


def cmd_report(args) -> None:
    from miqd import layout, report

    config = _stage_config(args)
    datasets = list(config["sources"])
    tasks = {t: layout.shard_ids(config["sources"][layout.TASK_DATASET[t]]["shards"]) for t in args.tasks}
    report.build(config["outdir"], datasets, tasks, args.validated, args.out, args.runs, args.compared)


def cmd_plot_distort(args) -> None:
    from miqd.plots import distort_figures

    root = args.root or str(Path(args.manifest).resolve().parents[1])  # <outdir>/distort/x.parquet
    distort_figures(args.manifest, root, args.quality, args.examples)


def cmd_corrupt(args) -> None:
    from miqd.distort.corruptions import get_corruption
    from miqd.distort.levels import SeverityScheme
    from miqd.errors import InputError
    from miqd.io import encode_png, read_image, write_bytes
    from miqd.seeding import rng_for

    corruption = get_corruption(args.corruption)
    scheme = SeverityScheme(args.scheme)
    candidates = scheme.candidates(corruption.name)
    if not 1 <= args.candidate <= len(candidates):
        raise InputError(f"--candidate {args.candidate}: the {scheme.name} scheme has candidates "
                         f"1..{len(candidates)} for {corruption.name} (`miqd corruptions` lists them)")
    params = candidates[args.candidate - 1]
    image = read_image(args.image)
    rng = rng_for(args.seed, Path(args.image).stem, corruption.name, args.candidate)
    out = corruption.apply(image, params, rng, scheme.variant)
    write_bytes(args.out, encode_png(out))
    print(f"{args.out}: {corruption.name} candidate {args.candidate} of {scheme.name} "
          f"({corruption.describe(params)})")


def cmd_corruptions(args) -> None:
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


def cmd_standin(args) -> None:
    from miqd.standin import make_standin

    path = make_standin(args.out, args.config)
    print(f"stand-in tree in {args.out}; dry-run the full DAG with:\n"
          f"  snakemake -n --configfile {path}")


def cmd_check_config(args) -> None:
    cfgmod.load(args.configfile)
    print(f"{args.configfile}: valid")


def cmd_preflight(args) -> None:
    from miqd import preflight

    preflight.run(cfgmod.load(args.config))
    print("preflight passed: every input the config names is present")


def cmd_train(args) -> None:
    import os

    from miqd.train import files, loop

    config = _stage_config(args)
    files.find_run(config, args.run)
    for key in ("workers", "threads"):  # not in the rules' config slice: they do not change results
        if getattr(args, key) is not None:
            config["train"][key] = getattr(args, key)
    if args.gpus is not None:  # the GPUs the job was given (0 on a CPU-only config): one process each
        config["train"]["gpus"] = max(1, args.gpus)
    gpus = config["train"]["gpus"]
    if gpus > 1 and config["train"]["device"] != "cpu":
        import torch

        if torch.cuda.device_count() < gpus:
            raise InputError(f"train.gpus is {gpus} but this job sees {torch.cuda.device_count()} CUDA device(s); "
                             f"ask the scheduler for {gpus} GPUs (the train rule's gpu resource) or lower train.gpus")
    if gpus > 1 and "WORLD_SIZE" not in os.environ:
        # several GPUs: one training process per GPU under torchrun (DistributedDataParallel)
        import json
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "miqd.train.loop", json.dumps(config), args.run]
        code = subprocess.call(cmd)
        if code:
            raise InputError(f"distributed training of {args.run} failed (torchrun exit status {code}); "
                             f"see the log above")
        return
    loop.train(config, args.run)


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
        evaluate.report(config, args.predictions, args.baseline_tables or [])


def cmd_resources(args) -> None:
    from miqd.resources import report

    print(report(args.outdir, args.profile), end="")


def cmd_score(args) -> None:
    from miqd.train import files, score_images

    checkpoint = args.checkpoint
    if checkpoint is None:
        config = cfgmod.load(args.config, whole_workflow=False)
        runs = [r for r in config["train"]["runs"] if r["task"] == args.task]
        runs.sort(key=lambda r: (r["model"] != "ra_miqa", r["label"] != "composite"))
        if not runs:
            raise InputError(f"no training run of task {args.task} in train.runs of {args.config}; "
                             f"pass --checkpoint")
        checkpoint = files.train_outputs(config["outdir"], files.run_name(runs[0]))["model"]
    from miqd.devices import resolve_device

    score_images.run(args.path, checkpoint, args.format, args.out, args.annotate, args.recursive,
              resolve_device(args.device, "--device"), args.batch_size, args.skip_errors, args.trust_pickle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miqd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"miqd {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-sources", help="write the embedded demo photos out of their packages")
    p.add_argument("--spec", required=True, help="sources.yaml of a demo set")
    p.add_argument("--out", required=True, help="folder to write the images into")
    p.set_defaults(func=cmd_demo_sources)

    p = sub.add_parser("select", help="score (NR-IQA) and choose the source images of one shard")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--shard", required=True, help="shard number (0-based)")
    p.add_argument("--out", required=True, help="Parquet table to write")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: select.<dataset>.threads)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("roi", help="ROI masks of one shard's selected sources (coco_gt, files, coseg)")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--out", required=True, help="Parquet table of masks and their statistics")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: roi.<dataset>.threads)")
    p.set_defaults(func=cmd_roi)

    p = sub.add_parser("distort", help="250 region-weighted distortions per source of one shard")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--masks", required=True, help="the shard's roi table")
    p.add_argument("--manifest", required=True, help="Parquet manifest to write")
    p.add_argument("--levels", required=True, help="Parquet table of severity candidates to write")
    p.add_argument("--seal", help="the shard's seal to write last: every file written, with its size")
    p.add_argument("--workers", type=int, default=1, help="processes (sources run in parallel)")
    p.set_defaults(func=cmd_distort)

    p = sub.add_parser("infer", help="every model of one (task, group) on one shard's images")
    _config_arg(p)
    p.add_argument("--models", required=True, help="registry file, or inline JSON of the group's entries")
    p.add_argument("--task", required=True, choices=["cls", "det", "ins"])
    p.add_argument("--group", required=True)
    p.add_argument("--shard", required=True)
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--manifest", required=True, help="the shard's distort manifest")
    p.add_argument("--out", required=True, help="index table of the group's prediction files")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: infer.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: infer.threads)")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("models", help="the model registry: check | list | fetch")
    p.add_argument("action", choices=["check", "list", "fetch"],
                   help="check: build every model and load its weights on the CPU (run before any "
                        "GPU job); list: print the registry; fetch: download hub/url weights and the "
                        "mmdetection sources projects/ entries need (where the internet is reachable)")
    p.add_argument("--registry", required=True,
                   help="the registry file, e.g. config/models.yaml (full scale) or config/models_demo.yaml")
    p.add_argument("--task", choices=["cls", "det", "ins"], help="only this task's models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("label", help="per-model scores and MMOS labels of one (task, shard)")
    _config_arg(p)
    p.add_argument("--task", required=True, choices=["cls", "det", "ins"])
    p.add_argument("--models", required=True, help="the task's models, inline JSON [{id, benchmark}, ...]")
    p.add_argument("--indexes", required=True, nargs="+", help="the shard's infer index of every group")
    p.add_argument("--manifest", required=True, help="the shard's distort manifest")
    p.add_argument("--sources", required=True, help="the shard's select table (cls ground truth)")
    p.add_argument("--annotations", help="COCO annotations json (det/ins ground truth)")
    p.add_argument("--out", required=True, help="label table to write")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("export-labels", help="labels as upstream MIQD-2.5M CSV files (<id>_mmos.csv, ...)")
    p.add_argument("--task", choices=["cls", "det", "ins"])
    p.add_argument("--out", required=True, help="the labels/ folder to fill (with --additional-info: the file)")
    p.add_argument("--additional-info", metavar="ANNOTATIONS",
                   help="instead: copy these COCO annotations to --out (miqa_det/additional_info/)")
    p.add_argument("labels", nargs="*", help="label tables")
    p.set_defaults(func=cmd_export_labels)

    p = sub.add_parser(
        "compare-labels", help="our labels beside the published MIQD-2.5M's: SRCC/PLCC and a scatter plot",
        description="Compare the labels of a run (its label tables) with the published MIQD-2.5M labels of the "
                    "same images: SRCC and PLCC per task and label type, per corruption and region type. Writes "
                    "<outdir>/compare/labels.{csv,md,png}.",
        epilog="example: miqd compare-labels --outdir results/miqd25m --published /data/MIQD-2.5M")
    p.add_argument("--published", required=True, help="root of the published MIQD-2.5M (miqa_cls/, miqa_det/, ...)")
    p.add_argument("--outdir", required=True, help="the run's outdir (its label/ tables)")
    p.add_argument("--tasks", nargs="+", choices=["cls", "det", "ins"], help="default: every task with labels")
    p.set_defaults(func=cmd_compare_labels)

    p = sub.add_parser("validate", help="label validation trials of one task (paper Table 4)")
    _config_arg(p)
    p.add_argument("--task", required=True, choices=["cls", "det", "ins"])
    p.add_argument("--models", required=True, help="the task's models, inline JSON [{id, benchmark}, ...]")
    p.add_argument("--out", required=True, help="per-trial table to write")
    p.add_argument("labels", nargs="+", help="the task's label tables")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("validation-table", help="paper Table 4 (CSV, Markdown) and a plot from trial tables")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--plot", required=True)
    p.add_argument("trials", nargs="+")
    p.set_defaults(func=cmd_validation_table)

    p = sub.add_parser("split", help="train/val split of a dataset's sources, balance report, upstream CSVs")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--out", required=True, help="split table to write")
    p.add_argument("--balance", required=True, help="per-class balance report (CSV)")
    p.add_argument("--upstream-train", required=True, help="upstream-format train CSV (miqa_cls_train.csv)")
    p.add_argument("--upstream-val", required=True, help="upstream-format val CSV")
    p.add_argument("sources", nargs="+", help="the dataset's select tables")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("report", help="one self-contained HTML page of a run's results")
    _config_arg(p)
    p.add_argument("--tasks", nargs="*", default=[], choices=["cls", "det", "ins"], help="tasks with labels")
    p.add_argument("--validated", action="store_true", help="include the label-validation table")
    p.add_argument("--runs", nargs="*", default=[], help="training runs to show (curves and evaluation)")
    p.add_argument("--compared", action="store_true", help="include regenerated vs published labels")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("merge", help="merge shard manifests into one table sorted by image id")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("plot-distort", help="PSNR/SSIM per corruption and region, and examples")
    p.add_argument("--manifest", required=True, help="a merged distort manifest")
    p.add_argument("--root", help="output root the manifest's paths are relative to "
                   "(default: two levels above the manifest, as the workflow lays it out)")
    p.add_argument("--quality", required=True, help="PNG: PSNR and SSIM box plots")
    p.add_argument("--examples", required=True, help="PNG: contact sheet of one source")
    p.set_defaults(func=cmd_plot_distort)

    p = sub.add_parser("corrupt", help="apply one corruption to one image (for a quick look)")
    p.add_argument("image")
    p.add_argument("--corruption", required=True)
    p.add_argument("--candidate", type=int, required=True,
                   help="candidate number in the scheme's table (miqd25m: 1..12, mildest parameters first)")
    p.add_argument("--scheme", default="miqd25m", help="severity scheme (default: miqd25m)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("corruptions", help="list the corruptions and every candidate of a severity scheme")
    p.add_argument("--scheme", default="miqd25m", help="severity scheme (default: miqd25m)")
    p.set_defaults(func=cmd_corruptions)

    p = sub.add_parser("standin", help="empty files shaped like ImageNet val + COCO val2017, "
                       "and a config pointing at them, for full-scale dry runs")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--config", default="config/miqd25m.yaml", help="full-scale config to copy")
    p.set_defaults(func=cmd_standin)

    p = sub.add_parser("train", help="train one quality model run (RA-MIQA or a baseline) of train.runs")
    _config_arg(p)
    p.add_argument("--run", required=True, help="run name <model>_<task>_<label>, e.g. ra_miqa_cls_composite")
    p.add_argument("--workers", type=int, help="DataLoader processes (default: train.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: train.threads)")
    p.add_argument("--gpus", type=int, help="GPUs; more than 1 runs under torchrun (default: train.gpus)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score validation sets with a trained run, compute baselines, "
                       "or assemble the paper's tables (Tables 5-8, Figs. 8-9)")
    _config_arg(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a trained run: its predictions on every evaluated task's validation set")
    what.add_argument("--baselines", choices=["cls", "det", "ins"], help="HVS baselines of a task (needs --out)")
    what.add_argument("--report", action="store_true", help="tables and figures from --predictions")
    p.add_argument("--out", help="with --baselines: Parquet table to write")
    p.add_argument("--predictions", nargs="+", help="with --report: predictions.parquet of each run")
    p.add_argument("--baseline-tables", nargs="*", help="with --report: baselines/<task>.parquet tables")
    p.add_argument("--workers", type=int, help="DataLoader processes (default: evaluate.workers)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: evaluate.threads)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="machine-centric quality of an image or a folder of images")
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("--task", choices=["cls", "det", "ins"], default="cls",
                   help="whose quality: picks the run of that task from the config (default cls)")
    p.add_argument("--checkpoint", help="a model.pt from `miqd train` or a published MIQA checkpoint "
                   "(miqa_<model>_<task>_<label>_metric.pth.tar) (default: the config's run of --task)")
    p.add_argument("--config", default="config/config.yaml", help="config naming the runs (default: the demo)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--out", help="write the scores to this file instead of printing them")
    p.add_argument("--annotate", metavar="DIR", help="also save each image with its score drawn on it here")
    p.add_argument("--recursive", action="store_true", help="look for images in subfolders too")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--skip-errors", action="store_true",
                   help="exit 0 even if some images cannot be read (they are listed either way)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a checkpoint that holds pickled Python objects (only for a file you trust: "
                        "unpickling can run code); by default only tensors and plain data are loaded")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("check-config", help="validate a config file against the schema")
    p.add_argument("configfile")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("preflight", help="check every input a config names (sources, ground truth, registry, "
                       "weights) before running anything")
    p.add_argument("--config", required=True, help="a config file, or its JSON")
    p.set_defaults(func=cmd_preflight)

    p = sub.add_parser("resources", help="SLURM mem_mb/runtime per rule from the jobs Snakemake measured "
                       "(logs/benchmarks of a run)")
    p.add_argument("--outdir", default="results", help="the run's output folder (default: results)")
    p.add_argument("--profile", help="a profile (folder or config.yaml) whose set-resources to show beside")
    p.set_defaults(func=cmd_resources)
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
