"""`miqd models fetch`: everything a registry needs that jobs never download, fetched once where
the internet is reachable: hub weights (the Hugging Face hub cache), url weights (miqd's weights
cache, checked against the SHA-256 prefix that OpenMMLab file names carry), and mmdetection's
configs/ and projects/ sources for the `projects/` entries the mmdet wheel does not ship.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from miqd.errors import InputError
from miqd.models.registry import ModelSpec, load_registry

# OpenMMLab checkpoints end in -<first 8 hex digits of their SHA-256>.pth
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.(?:pth|pt|bin|safetensors)$")
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def expected_prefix(url: str) -> str | None:
    m = HASH_IN_NAME.search(Path(url).name)
    return m[1] if m else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_hash(path: Path, prefix: str | None, url: str) -> None:
    if prefix is None:
        return
    digest = sha256(path)
    if not digest.startswith(prefix):
        raise InputError(f"{path.name}: SHA-256 {digest[:16]}... does not start with {prefix}, as its name "
                         f"says: the download from {url} is corrupt or not that checkpoint")


def download(url: str, dest: Path) -> str:
    """`url` into `dest` via a .part file (never a half file under the real name), with a progress
    bar on stderr and the name's hash checked; 'fetched' or 'already here'."""
    from tqdm import tqdm

    prefix = expected_prefix(url)
    if dest.is_file():
        try:
            _check_hash(dest, prefix, url)
        except InputError as err:
            raise InputError(f"{err}; {dest} is already in the cache: delete it and fetch again") from None
        return "already here"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      mininterval=1, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        _check_hash(part, prefix, url)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return "fetched" + (f", SHA-256 prefix {prefix} verified" if prefix else "")


def hub_weights(repo_id: str) -> Path:
    """The first of the usual weight files the hub repo has, downloaded into the hub cache."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise InputError("HF_HUB_OFFLINE=1 is set (the Makefile exports it so jobs and tests never download): "
                         "run `HF_HUB_OFFLINE=0 miqd models fetch ...` where the internet is reachable")
    for name in HUB_FILES:
        try:
            return Path(hf_hub_download(repo_id, name))
        except EntryNotFoundError:
            continue
        except Exception as err:  # noqa: BLE001 - network, auth, unknown repo: say which
            raise InputError(f"hub repo {repo_id}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    raise InputError(f"hub repo {repo_id} has none of {', '.join(HUB_FILES)}")


def mmdet_sources(url: str | None = None) -> tuple[Path, str]:
    """mmdetection's configs/ and projects/ from its release archive into the weights cache."""
    from miqd.models.backends.mmdet_backend import MMDET_SOURCES_URL, SOURCES_FOLDERS, sources_root

    root = sources_root()
    if all((root / f).is_dir() for f in SOURCES_FOLDERS):
        return root, "already here"
    url = url or MMDET_SOURCES_URL
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".sources-") as tmp:
        archive = Path(tmp) / "sources.tar.gz"
        download(url, archive)
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if len(Path(m.name).parts) > 1 and Path(m.name).parts[1] in SOURCES_FOLDERS]
            if not members:
                raise InputError(f"{url}: the archive has no {' or '.join(SOURCES_FOLDERS)} folder")
            for m in members:  # drop the archive's top folder (mmdetection-3.3.0/)
                m.name = str(Path(*Path(m.name).parts[1:]))
            tar.extractall(unpacked, members=members, filter="data")
        if root.exists():
            shutil.rmtree(root)
        unpacked.replace(root)
    return root, "fetched"


def fetch(registry: str, task: str | None = None) -> int:
    """Fetch what the registry's models need; one line per item, a summary, non-zero on failure."""
    specs = [s for s in load_registry(registry) if task is None or s.task == task]
    items: list[tuple[str, object]] = []
    for spec in specs:
        w = spec.weights
        if isinstance(w, dict) and ("hub" in w or "url" in w):
            items.append((spec.id, lambda s=spec: _weights(s)))
    projects = [s.id for s in specs if s.backend == "mmdet" and s.arch.startswith("projects/")]
    if projects:
        items.append((f"mmdetection sources (for {', '.join(projects)})", lambda: mmdet_sources()))
    print(f"registry {registry}: {len(specs)} models, {len(items)} things to fetch", flush=True)
    failures = []
    for what, get in items:
        try:
            path, how = get()
            print(f"{what:32s} {how}: {path}", flush=True)
        except (InputError, OSError) as err:
            failures.append(what)
            print(f"{what:32s} ERROR: {err}", file=sys.stderr, flush=True)
    print(f"{len(items) - len(failures)} of {len(items)} fetched or already here"
          + (f"; failed: {', '.join(failures)}" if failures else ""), flush=True)
    return 2 if failures else 0


def _weights(spec: ModelSpec) -> tuple[Path, str]:
    from miqd.models.weights import weights_cache

    w = spec.weights
    if "hub" in w:
        return hub_weights(w["hub"]), "in the hub cache"
    dest = weights_cache() / Path(w["url"]).name
    return dest, download(w["url"], dest)
