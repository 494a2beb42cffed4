"""`miqd`: one thin subcommand per stage; the Snakemake rules call these, and so can you."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from miqd import __version__
from miqd import config as cfgmod
from miqd.io import InputError


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True,
        help="YAML config file, or inline JSON (what the Snakemake rules pass)",
    )


def _stage_config(args) -> dict:
    return cfgmod.load(args.config, whole_workflow=False)


def cmd_demo_sources(args) -> None:
    from miqd.sources import materialize_demo

    written = materialize_demo(args.spec, args.out)
    logging.getLogger("miqd").info("wrote %d demo images to %s", len(written), args.out)


def cmd_select(args) -> None:
    from miqd import select

    select.run(_stage_config(args), args.dataset, int(args.shard), args.out)


def cmd_roi(args) -> None:
    from miqd import roi

    roi.run(_stage_config(args), args.dataset, args.sources, args.out)


def cmd_distort(args) -> None:
    from miqd.distort import engine

    config = _stage_config(args)
    settings = engine.DistortSettings.from_config(config)
    engine.run(args.sources, args.masks, args.manifest, args.levels, args.dataset,
               config["outdir"], settings, workers=args.workers)


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
    from miqd.models import check

    code = {"check": check.check, "list": check.list_models, "fetch": check.fetch}[args.action](
        args.registry, args.task)
    if code:
        raise SystemExit(code)


def cmd_plot_distort(args) -> None:
    from miqd.plots import distort_figures

    root = args.root or str(Path(args.manifest).resolve().parents[1])  # <outdir>/distort/x.parquet
    distort_figures(args.manifest, root, args.quality, args.examples)


def cmd_corrupt(args) -> None:
    from miqd.distort.corruptions import get_corruption
    from miqd.io import encode_png, read_image, write_bytes
    from miqd.seeding import rng_for

    corruption = get_corruption(args.corruption)
    image = read_image(args.image)
    image_id = Path(args.image).stem
    out = corruption(image, args.severity, rng_for(args.seed, image_id, corruption.name, args.severity))
    write_bytes(args.out, encode_png(out))
    print(f"{args.out}: {corruption.name} severity {args.severity:g} "
          f"({corruption.describe(corruption.params_at(args.severity))})")


def cmd_corruptions(args) -> None:
    from miqd.distort.corruptions import available_corruptions, get_corruption

    for name in available_corruptions():
        c = get_corruption(name)
        levels = "; ".join(c.describe(p) for p in c.imagenet_c)
        kind = "stochastic" if c.stochastic else "deterministic"
        print(f"{name:17s} {c.category:12s} {kind:13s} {levels}")


def cmd_standin(args) -> None:
    from miqd.standin import make_standin

    path = make_standin(args.out, args.config)
    print(f"stand-in tree in {args.out}; dry-run the full DAG with:\n"
          f"  snakemake -n --configfile {path}")


def cmd_check_config(args) -> None:
    cfgmod.load(args.configfile)
    print(f"{args.configfile}: valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miqd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"miqd {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-sources", help="write the embedded demo photos out of their packages")
    p.add_argument("--spec", required=True, help="sources.yaml of a demo set")
    p.add_argument("--out", required=True, help="folder to write the images into")
    p.set_defaults(func=cmd_demo_sources)

    p = sub.add_parser("select", help="choose the source images of one shard")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--shard", required=True, help="shard number (0-based)")
    p.add_argument("--out", required=True, help="Parquet table to write")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("roi", help="ROI masks of one shard's selected sources")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--out", required=True, help="Parquet table of masks and their statistics")
    p.set_defaults(func=cmd_roi)

    p = sub.add_parser("distort", help="250 region-weighted distortions per source of one shard")
    _config_arg(p)
    p.add_argument("--dataset", required=True, choices=["imagenet", "coco"])
    p.add_argument("--sources", required=True, help="the shard's select table")
    p.add_argument("--masks", required=True, help="the shard's roi table")
    p.add_argument("--manifest", required=True, help="Parquet manifest to write")
    p.add_argument("--levels", required=True, help="Parquet table of severity candidates to write")
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
                        "GPU job); list: print the registry; fetch: download hub/url weights")
    p.add_argument("--registry", default="config/models_demo.yaml")
    p.add_argument("--task", choices=["cls", "det", "ins"], help="only this task's models")
    p.set_defaults(func=cmd_models)

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
    p.add_argument("--severity", type=float, required=True, help="1..5; fractions interpolate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("corruptions", help="list the registered corruptions and their constants")
    p.set_defaults(func=cmd_corruptions)

    p = sub.add_parser("standin", help="empty files shaped like ImageNet val + COCO val2017, "
                       "and a config pointing at them, for full-scale dry runs")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--config", default="config/miqd25m.yaml", help="full-scale config to copy")
    p.set_defaults(func=cmd_standin)

    p = sub.add_parser("check-config", help="validate a config file against the schema")
    p.add_argument("configfile")
    p.set_defaults(func=cmd_check_config)
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
