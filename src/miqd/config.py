"""Load and validate workflow configs against the one schema the Snakefile also uses.

`validate` fills defaults in place and raises `ConfigError` naming the offending key and what is
allowed there. The Snakefile calls it at load time; every `miqd` command calls it on what it gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import yaml

from miqd.distort.corruptions import available_corruptions
from miqd.errors import ConfigError, InputError
from miqd.schema import check_schema, schema


def validate(config: dict, whole_workflow: bool = True) -> dict:
    """Fill defaults into `config` (in place), check it, and return it.

    `whole_workflow=False` is for a stage job's slice of the config (`stage_json`), which carries
    only the keys that stage reads.
    """
    _check_sections(config)
    try:
        check_schema(config, "config", "config")
    except ConfigError as err:
        raise ConfigError(f"{err}{_command_line_hint(config, str(err))}") from None
    _check_semantics(config, whole_workflow)
    return config


def _override_fix(example: str) -> str:
    """How to override a nested setting: a YAML file layered after the base config."""
    return (f"put the override in a YAML file (e.g. override.yaml holding `{example}`) and layer it after "
            f"the base config: snakemake --configfile config/config.yaml override.yaml (later files "
            f"override earlier ones key by key, nested keys included)")


def _example(keys: list[str], value: object) -> str:
    """`infer: {threads: 1}`: the YAML that sets `value` at the nested `keys`."""
    for key in reversed(keys[1:]):
        value = {key: value}
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"{keys[0]}: {text}"


def _check_sections(config: dict) -> None:
    """A section that is not a mapping, as `snakemake --config infer=...` can make it: the value
    replaces the whole section (the file's other keys of it are gone) and is a string unless it
    parses as YAML, so the schema's type error alone would not say what happened or what to do."""
    properties = schema("config")["properties"]
    for key, value in config.items():
        if properties.get(key, {}).get("type") == "object" and not isinstance(value, dict):
            got = f"the string {value!r}" if isinstance(value, str) else f"{value!r}"
            meant = _yaml_value(value) if isinstance(value, str) else None
            example = _example([key], meant if isinstance(meant, dict) else {"<setting>": "<value>"})
            raise ConfigError(
                f"invalid config: key {key}: got {got}, not a mapping of settings. A nested value "
                f"given as `snakemake --config {key}=...` arrives as one value (a string unless it is "
                f"valid YAML) and replaces the whole {key} section instead of changing one setting; "
                + _override_fix(example)
            )


def _command_line_hint(config: dict, message: str) -> str:
    """The fix for a type error on a nested string that reads as a number or a boolean: Snakemake
    keeps the values of `--config section='{key: 1}'` as strings ('1')."""
    for key, value in _nested_strings(config):
        meant = _yaml_value(value)
        if f"key {key}: " in message and isinstance(meant, (bool, int, float)):
            keys = key.split(".")
            return (f". {key} is the string {value!r}: `snakemake --config {keys[0]}=...` passes nested "
                    f"values as strings; " + _override_fix(_example(keys, meant)))
    return ""


def _yaml_value(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _nested_strings(node: object, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string below the top level, keyed as schema errors name them."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, value in items:
        sub = f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k)
        if isinstance(value, str) and key:
            yield sub, value
        elif isinstance(value, (dict, list)):
            yield from _nested_strings(value, sub)


def _check_semantics(config: dict, whole_workflow: bool) -> None:
    if whole_workflow and not config["sources"] and config["train"]["source"] != "published":
        raise ConfigError(
            "invalid config: key sources: no source dataset is configured. A --configfile replaces the "
            "default config rather than adding to it, so an override file on its own has none: give the "
            "base config first, e.g. --configfile config/config.yaml my-overrides.yaml (to train on the published "
            "MIQD-2.5M without sources: config/published.yaml)"
        )
    known = available_corruptions()
    for i, name in enumerate(config["distort"]["corruptions"]):
        if name not in known:
            raise ConfigError(
                f"invalid config: key distort.corruptions[{i}]: unknown corruption {name!r}; "
                f"allowed: {', '.join(known)}"
            )
    blend = config["distort"]["blend"]
    for key in ("kernel", "smooth_kernel"):
        if blend[key] % 2 == 0:
            raise ConfigError(f"invalid config: key distort.blend.{key}: {blend[key]} must be odd")
    if config["distort"]["png_encoder"] == "isal" and config["distort"]["png_compression"] > 3:
        raise ConfigError(f"invalid config: key distort.png_compression: "
                          f"{config['distort']['png_compression']} is above 3, the highest level of "
                          f"the isal encoder (use png_encoder: zlib for levels 4-9)")
    lo, hi = blend["band"]
    if not lo < hi:
        raise ConfigError(f"invalid config: key distort.blend.band: {lo} must be below {hi}")
    # the severity scheme checks its own ranks / candidates
    from miqd.distort.levels import SeverityScheme

    try:
        SeverityScheme(config["distort"]["severity_scheme"], tuple(config["distort"]["ranks"]),
                       config["distort"]["rank_min_side"])
    except InputError as err:
        raise ConfigError(f"invalid config: key {err}") from None

    _check_select_roi(config)
    if whole_workflow:
        _check_train_runs(config)
    for dataset, src in config["sources"].items():
        if "images" not in src:
            if "materialize" not in src:
                raise ConfigError(f"invalid config: key sources.{dataset}.images is required")
            src["images"] = str(Path(config["outdir"]) / "demo_sources" / dataset)
        sel = config["select"][dataset]
        if sel["method"] == "list" and "list" not in sel:
            raise ConfigError(
                f"invalid config: key select.{dataset}.list is required by method 'list'"
            )
        if dataset not in config["roi"]:
            if not whole_workflow:
                continue
            raise ConfigError(
                f"invalid config: key roi.{dataset} is missing; say where its ROI masks come "
                f"from (method coco_gt with `annotations`, or files with `dir`)"
            )


def _check_train_runs(config: dict) -> None:
    """A run trains on labels this config makes: its task's dataset and inference must be in it."""
    if config["train"]["source"] == "published":
        return
    from miqd.layout import TASK_DATASET

    for i, run in enumerate(config["train"]["runs"]):
        task, dataset = run["task"], TASK_DATASET[run["task"]]
        if dataset not in config["sources"]:
            raise ConfigError(
                f"invalid config: key train.runs[{i}].task: {task} trains on labels of sources.{dataset}, "
                f"which this config does not have; add sources.{dataset} or remove the run"
            )
        if task not in config["infer"]["tasks"]:
            raise ConfigError(
                f"invalid config: key train.runs[{i}].task: {task} is not in infer.tasks, so it has no "
                f"labels; add it there or remove the run"
            )


def _check_select_roi(config: dict) -> None:
    """What the schema cannot say about the select and roi sections."""
    from miqd import nriqa

    for dataset, sel in config["select"].items():
        key = f"select.{dataset}"
        names = [m["name"] for m in sel["metrics"]]
        for i, entry in enumerate(sel["metrics"]):
            try:
                nriqa.check_metric_config(entry, f"{key}.metrics[{i}]")
            except InputError as err:
                raise ConfigError(f"invalid config: key {err}") from None
            if entry["name"] in names[:i]:
                raise ConfigError(f"invalid config: key {key}.metrics[{i}]: metric {entry['name']!r} is listed twice")
        unknown = sorted(set(sel["combine"]["weights"]) - set(names))
        if unknown:
            raise ConfigError(f"invalid config: key {key}.combine.weights: {', '.join(unknown)} "
                              f"is not one of the metrics ({', '.join(names) or 'none'})")
        if sel["method"] == "top_k":
            if not names:
                raise ConfigError(f"invalid config: key {key}.metrics: method top_k ranks by NR-IQA scores; "
                                  f"name at least one metric ({', '.join(nriqa.available_metrics())})")
            if dataset != "imagenet":
                raise ConfigError(f"invalid config: key {key}.method: top_k keeps the best k per class and "
                                  f"{dataset} has no classes; use all or list")
    for dataset, roi in config["roi"].items():
        need = {"coco_gt": "annotations", "files": "dir", "coseg": "coseg"}[roi["method"]]
        if need not in roi:
            raise ConfigError(
                f"invalid config: key roi.{dataset}.{need} is required by method {roi['method']!r}"
            )
        if roi["method"] == "coseg":
            if roi["coseg"]["groups"] == "class" and dataset != "imagenet":
                raise ConfigError(f"invalid config: key roi.{dataset}.coseg.groups: {dataset} has no classes; "
                                  f"use blocks (with group_size)")


def load(source: str | Path, whole_workflow: bool = True) -> dict:
    """A validated config from a YAML file path or an inline JSON object (as rules pass it)."""
    text = str(source)
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"invalid inline config JSON: {err}") from None
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {text[:80]!r} is not a mapping")
    return validate(data, whole_workflow)


# keys that do not change a stage's outputs: editing them must not rerun its jobs. How a job runs
# (its resources, threads, decode workers, GPUs) reaches it through the rule's threads/resources.
_HOW_IT_RUNS = frozenset({"resources", "threads", "workers", "gpus"})
_NOT_OUTPUT_RELEVANT = {"infer": ("registry", "tasks")}  # the registry reaches jobs as their models


def _without_how_it_runs(value):
    if isinstance(value, dict):
        return {k: _without_how_it_runs(v) for k, v in value.items() if k not in _HOW_IT_RUNS}
    return value

_STAGE_KEYS = {
    "select": ("outdir", "max_source_pixels", "seed", "sources", "select"),
    "roi": ("outdir", "max_source_pixels", "seed", "roi"),
    "distort": ("outdir", "max_source_pixels", "seed", "distort"),
    "infer": ("outdir", "max_source_pixels", "infer"),
    "label": ("outdir", "label"),
    "validate": ("seed", "label", "validate"),
    "split": ("seed", "split"),
    "report": ("outdir", "sources", "compare"),
    "train": ("outdir", "max_source_pixels", "seed", "sources", "label", "train"),
    "evaluate": ("outdir", "max_source_pixels", "seed", "sources", "label", "train", "evaluate"),
}


def stage_json(config: dict, stage: str, dataset: str | None = None) -> str:
    """The part of the config a stage job reads, as compact JSON for the rule's `params`.

    Snakemake reruns a job when its params change, so passing only the stage's own keys (and only
    the job's dataset), without how the job runs, reruns exactly the jobs a config edit affects.
    """
    sub: dict = {}
    for key in _STAGE_KEYS[stage]:
        value = config[key]
        if dataset is not None and key in ("sources", "select", "roi"):
            value = {dataset: value[dataset]} if dataset in value else {}
        if key in _NOT_OUTPUT_RELEVANT:
            value = {k: v for k, v in value.items() if k not in _NOT_OUTPUT_RELEVANT[key]}
        sub[key] = _without_how_it_runs(value)
    return json.dumps(sub, sort_keys=True, separators=(",", ":"))
