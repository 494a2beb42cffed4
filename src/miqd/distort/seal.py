"""A distort shard's seal: every file the job wrote under the output root, with its size.

The PNGs are not Snakemake outputs (2.5M of them would swamp the DAG), so the seal stands for
them: the workflow compares it with the disk when it plans a distort job and, if a file is gone
or has another size (a deletion, a truncated copy), deletes the seal, which makes the shard's job
(and what reads it) run again. One stat per file: ~0.8 s per 250k files here.
"""

from __future__ import annotations

import os
from pathlib import Path


def write(path: str, outdir: str, files: list[Path]) -> None:
    from miqd.io import write_bytes  # here: the workflow reads seals at parse time, without pandas

    root = Path(outdir)
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{os.lstat(p).st_size}" for p in files)
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def damaged(path: str, outdir: str) -> list[str]:
    """The sealed files (relative paths) that are missing or no longer have their size."""
    bad = []
    root = os.fspath(outdir) + os.sep
    lstat = os.lstat
    with open(path) as f:
        for line in f:
            rel, _, size = line.rstrip("\n").rpartition("\t")
            try:
                if lstat(root + rel).st_size != int(size):
                    bad.append(rel)
            except FileNotFoundError:
                bad.append(rel)
    return bad


def verify(path: str, outdir: str) -> list[str]:
    """Check the seal of a finished shard (if any); a broken one is removed, so the shard reruns."""
    if not os.path.exists(path):
        return []
    bad = damaged(path, outdir)
    if bad:
        os.unlink(path)
    return bad
