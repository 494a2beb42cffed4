"""Where `miqd` commands find their default files, and what a config file's relative paths mean.

A config's relative paths (`resources/demo/...`, `outdir: results`) are relative to the directory
the workflow runs in: the project holding the Snakefile. The Snakemake rules pass each job its
config slice as JSON from there, and those are used exactly as given. A command a person runs with
a config *file* from elsewhere gets the file's relative paths made absolute against its project, so
`miqd score` or `miqd preflight` work from any directory.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import miqd
from miqd.errors import InputError

# every config key that holds a file or folder path; `*` = each entry of a mapping, `[]` = of a list
PATH_KEYS = (
    "outdir",
    "sources.*.images", "sources.*.ground_truth", "sources.*.annotations", "sources.*.materialize",
    "select.*.list", "select.*.metrics[].weights.file",
    "roi.*.annotations", "roi.*.dir", "roi.*.coseg.model.weights.file",
    "infer.registry",
    "compare.published",
    "train.published.root", "train.published.splits",
    "train.models.*.weights.file", "train.region_encoder.weights.file",
    "evaluate.pyiqa[].weights.file",
)
PROJECT_MARKER = "Snakefile"


def package_project() -> Path | None:
    """The source checkout this package runs from (a source or editable install), if it is one."""
    root = Path(miqd.__file__).resolve().parents[2]
    return root if (root / "config" / "config.yaml").is_file() else None


def default_file(relative: str, option: str) -> Path:
    """A default such as config/config.yaml: in the current directory (where the workflow runs),
    else in the source checkout of miqd; otherwise an error naming where it looked."""
    here = Path(relative)
    if here.is_file():
        return here
    project = package_project()
    if project is not None and (project / relative).is_file():
        return project / relative
    looked = [str(here.resolve())] + ([str(project / relative)] if project else [])
    raise InputError(f"no {option} given and the default {relative} is not at {' nor '.join(looked)} "
                     f"(miqd is not run from, or installed from, its source checkout); "
                     f"pass {option} FILE")


def is_inline(source: str) -> bool:
    """Inline JSON, as the rules pass it (miqd.config.load reads it the same way)."""
    return str(source).lstrip().startswith("{")


def project_of(config_file: str | Path) -> Path | None:
    """The directory a config file's relative paths refer to: its nearest ancestor with a Snakefile."""
    for folder in Path(config_file).resolve().parents:
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return None


def rebase(config: dict, root: Path) -> dict:
    """Make the config's relative paths (PATH_KEYS) absolute against `root`, in place."""
    for key in PATH_KEYS:
        _rebase(config, key.split("."), root)
    return config


def _rebase(node: object, parts: list[str], root: Path) -> None:
    part, rest = parts[0], parts[1:]
    each = part.endswith("[]")
    name = part.removesuffix("[]")
    if not isinstance(node, dict):
        return
    children = list(node.values()) if name == "*" else [node.get(name)]
    if each:
        children = [item for child in children if isinstance(child, list) for item in child]
    if rest:
        for child in children:
            _rebase(child, rest, root)
    elif name != "*" and isinstance(node.get(name), str) and not Path(node[name]).is_absolute():
        node[name] = str(root / node[name])


def outside_project(source: str) -> Path | None:
    """The project of config file `source` when the command runs outside it, else None."""
    if is_inline(source):
        return None
    project = project_of(source)
    if project is None or project == Path.cwd().resolve():
        return None
    return project


def load_config(source: str, whole_workflow: bool = True) -> dict:
    """miqd.config.load, with a config file's relative paths taken from its project when the command
    runs elsewhere. Inline JSON (the rules' slices) and runs from the project are left as they are."""
    from miqd import config as cfgmod

    config = cfgmod.load(source, whole_workflow)
    project = outside_project(source)
    return rebase(config, project) if project else config


@contextlib.contextmanager
def rebased_file(source: str | Path) -> Iterator[Path]:
    """Config file `source`, or, run outside its project, a copy of it whose paths are absolute."""
    import yaml

    project = outside_project(str(source))
    if project is None or not Path(source).is_file():  # a missing file: miqd.config.load says so
        yield Path(source)
        return
    raw = yaml.safe_load(Path(source).read_text()) or {}
    with tempfile.TemporaryDirectory(prefix="miqd-config-") as tmp:
        copy = Path(tmp) / Path(source).name
        copy.write_text(yaml.safe_dump(rebase(raw, project), sort_keys=False))
        yield copy
