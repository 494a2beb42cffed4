"""Every input a config's jobs will read, checked before any stage runs.

The workflow runs this before its first job (the Snakefile's onstart; not in a dry run);
`miqd preflight --config FILE` runs it by hand. It looks at files and names only (no image is decoded, no model built), so it takes seconds
at full scale, and it reports every problem it finds, each naming the file or config key and the
fix: a short or empty ground truth, annotations that point at unknown images, missing source
images, registry architectures and weight files, the training weights and the region encoder.
Sources the workflow writes itself (the demo's `materialize`) are checked once they exist.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from miqd import sources
from miqd.errors import InputError

log = logging.getLogger("miqd.preflight")


def _folder_names(folder: Path) -> set[str] | None:
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return None


def _examples(items: list, n: int = 3) -> str:
    return ", ".join(str(i) for i in items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def check_imagenet(src: dict) -> list[str]:
    try:
        labels = sources.read_imagenet_ground_truth(src["ground_truth"])
    except InputError as err:
        return [str(err)]
    gt = src["ground_truth"]
    if not labels:
        return [f"ImageNet ground truth {gt} is empty (sources.imagenet.ground_truth): it needs one "
                f"'<class index>,<class name>' line per image"]
    if "materialize" in src and not Path(src["images"]).is_dir():
        return []  # the workflow writes these images itself
    names = _folder_names(Path(src["images"]))
    if names is None:
        return [f"image folder {src['images']} does not exist (sources.imagenet.images)"]
    template = src["filename_template"]
    expected = [template.format(index=i) for i in range(1, len(labels) + 1)]
    problems = []
    missing = [n for n in expected if n not in names]
    if missing:
        problems.append(f"{len(missing)} of the {len(expected)} images the ground truth {gt} names are not in "
                        f"{src['images']}: {_examples(missing)}; fix sources.imagenet.images or "
                        f"filename_template ({template!r})")
    pattern = re.compile("^" + re.escape(template).replace(r"\{index:08d\}", r"(\d+)").replace(r"\{index\}", r"(\d+)")
                         + "$")
    beyond = sorted(n for n in names if (m := pattern.match(n)) and int(m.group(1)) > len(labels))
    if beyond:
        problems.append(f"ground truth {gt} has {len(labels)} lines, but {src['images']} also holds "
                        f"{len(beyond)} images after them: {_examples(beyond)}; they would have no label "
                        f"(the ground truth is short, or from another set)")
    return problems


def check_coco(src: dict) -> list[str]:
    try:
        data = sources.read_coco(src["annotations"])
    except InputError as err:
        return [str(err)]
    path = src["annotations"]
    if not data["annotations"]:
        return [f"COCO annotation file {path} has no annotations: no image would be a candidate "
                f"(sources.coco.annotations)"]
    known = {int(im["id"]): im for im in data["images"]}
    dangling = sorted({int(a["image_id"]) for a in data["annotations"]} - set(known))
    problems = []
    if dangling:
        problems.append(f"COCO annotation file {path}: annotations point at {len(dangling)} image ids that its "
                        f"'images' list does not have: {_examples(dangling)}; the file is incomplete or mixed")
    if "materialize" in src and not Path(src["images"]).is_dir():
        return problems
    names = _folder_names(Path(src["images"]))
    if names is None:
        return problems + [f"image folder {src['images']} does not exist (sources.coco.images)"]
    annotated = {int(a["image_id"]) for a in data["annotations"]} & set(known)
    missing = sorted(known[i]["file_name"] for i in annotated if known[i]["file_name"] not in names)
    if missing:
        problems.append(f"{len(missing)} annotated images of {path} are not in {src['images']}: "
                        f"{_examples(missing)}; fix sources.coco.images")
    return problems


def check_registry(registry: str, tasks: list[str]) -> list[str]:
    from miqd.models.check import preflight as weights_preflight
    from miqd.models.registry import load_registry

    try:
        specs = [s for s in load_registry(registry) if s.task in tasks]
    except InputError as err:
        return [str(err)]
    problems = [f"{msg} (registry {registry})" for msg in weights_preflight(specs).values()]
    problems += [p for s in specs for p in _architecture(s, registry)]
    return problems


def _architecture(spec, registry: str) -> list[str]:
    where = f"model {spec.id!r} (registry {registry})"
    if spec.backend == "timm":
        import timm

        if not timm.is_model(spec.arch):
            close = timm.list_models(f"*{spec.arch.split('.')[0][:6]}*")[:5]
            return [f"{where}: timm {timm.__version__} has no architecture {spec.arch!r}"
                    + (f"; similar: {', '.join(close)}" if close else "")]
    elif spec.backend == "torchvision":
        from torchvision.models import detection, list_models

        if spec.arch not in list_models(module=detection):
            return [f"{where}: torchvision has no detection architecture {spec.arch!r}"]
    elif spec.backend == "mmdet":
        try:
            from miqd.models.backends.mmdet_backend import config_path, require_mmdet

            require_mmdet()
            config_path(spec)
        except InputError as err:
            return [f"{where}: {err}"]
    return []


def check_training(config: dict) -> list[str]:
    from miqd.models.weights import checkpoint_path
    from miqd.train.networks import MODELS, training_spec

    t = config["train"]
    problems = []
    for i, run in enumerate(t["runs"]):
        if run["model"] not in MODELS:
            problems.append(f"train.runs[{i}].model: unknown quality model {run['model']!r}; known: "
                            f"{', '.join(MODELS)}")
    import timm

    models = t.get("models", {})
    for name in sorted({run["model"] for run in t["runs"]} & set(MODELS)):
        entry = models.get(name, {})
        arch = entry.get("arch") or MODELS.get(name).arch
        if not timm.is_model(arch):
            problems.append(f"train.models.{name}.arch: timm has no architecture {arch!r}")
        try:
            checkpoint_path(training_spec(f"train.models.{name}", arch, entry.get("weights", "random")),
                            key=f"train.models.{name}.weights")
        except InputError as err:
            problems.append(str(err))
    if any(MODELS.get(run["model"]).region for run in t["runs"] if run["model"] in MODELS):
        enc = t["region_encoder"]
        if not timm.is_model(enc["arch"]):
            problems.append(f"train.region_encoder.arch: timm has no architecture {enc['arch']!r}")
        try:
            checkpoint_path(training_spec("train.region_encoder", enc["arch"], enc["weights"]),
                            key="train.region_encoder.weights")
        except InputError as err:
            problems.append(str(err))
    return problems


def check_weights_files(config: dict) -> list[str]:
    """Weight files named for selection metrics and co-segmentation."""
    problems = []
    for dataset, sel in config["select"].items():
        for i, metric in enumerate(sel.get("metrics", [])):
            w = metric.get("weights")
            if isinstance(w, dict) and not Path(w["file"]).is_file():
                problems.append(f"select.{dataset}.metrics[{i}].weights.file ({metric['name']}): {w['file']} "
                                f"does not exist")
    for dataset, roi in config["roi"].items():
        if roi.get("method") == "coseg":
            w = roi["coseg"]["model"]["weights"]["file"]
            if not Path(w).is_file():
                problems.append(f"roi.{dataset}.coseg.model.weights.file: {w} does not exist")
        elif roi.get("method") == "coco_gt" and not Path(roi["annotations"]).is_file():
            problems.append(f"roi.{dataset}.annotations: {roi['annotations']} does not exist")
        elif roi.get("method") == "files" and not Path(roi["dir"]).is_dir():
            problems.append(f"roi.{dataset}.dir: {roi['dir']} does not exist")
    return problems


def problems(config: dict) -> list[str]:
    found = []
    for dataset, src in config["sources"].items():
        found += check_imagenet(src) if dataset == "imagenet" else check_coco(src)
    found += check_weights_files(config)
    tasks = [t for t in config["infer"]["tasks"]
             if {"cls": "imagenet", "det": "coco", "ins": "coco"}[t] in config["sources"]]
    found += check_registry(config["infer"]["registry"], tasks)
    if config["train"]["runs"]:
        found += check_training(config)
    return found


def run(config: dict) -> None:
    found = problems(config)
    if found:
        raise InputError(f"preflight: {len(found)} problem(s) to fix before any stage runs:\n  - "
                         + "\n  - ".join(found))
    log.info("preflight: sources, registry and training inputs are all present")


def run_for_workflow(config: dict, log_path: str) -> None:
    """The Snakefile's onstart: the report goes to `log_path` and stderr; a problem stops the run
    before any job, with exit status 1 and no traceback."""
    import sys

    from miqd.io import write_text

    try:
        run(config)
    except InputError as err:
        write_text(log_path, f"{err}\n")
        print(f"\n{err}\n(report: {log_path})", file=sys.stderr)
        raise SystemExit(1) from None
    write_text(log_path, "preflight passed: every input the config names is present\n")
