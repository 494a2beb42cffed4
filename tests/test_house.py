"""The package's shape: no import cycle, pure maths that loads no I/O library, a workflow that
plans without loading the models' libraries, short functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, snakemake_env

SRC = REPO / "src"
PURE = ["miqd.label.mmos", "miqd.label.agreement", "miqd.label.ap", "miqd.correlation", "miqd.errors",
        "miqd.seeding", "miqd.layout", "miqd.wording"]
IO_LIBRARIES = ["pandas", "pyarrow", "cv2", "PIL", "torch", "snakemake"]
MAX_FUNCTION_LINES = 80


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, from every import statement (also those inside
    functions: a cycle held apart by a local import is still a cycle)."""
    files = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in files and n != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "miqd.config" in graph and graph["miqd.config"], "the import graph was not read"
    assert cycles(graph) == []


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_no_io_library(module):
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing {module} loads {proc.stdout.strip()}"


def test_planning_the_workflow_loads_no_model_library(tmp_path):
    """Every Snakemake start parses the rules (each dry run, and each SLURM job again): torch alone
    would add ~3.5 s to the ~2.7 s a dry run of the demo takes here."""
    heavy = ["torch", "torchvision", "timm", "ultralytics", "mmdet", "matplotlib", "pyiqa"]
    code = ("import atexit, sys; "
            f"atexit.register(lambda: print('LOADED', *[m for m in {heavy!r} if m in sys.modules])); "
            "from snakemake.cli import main; "
            f"sys.argv = ['snakemake', '-n', '--config', 'outdir={tmp_path}']; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=snakemake_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Job stats:" in proc.stdout + proc.stderr  # it planned the demo
    loaded = proc.stdout.rsplit("LOADED", 1)[1].split()
    assert loaded == [], f"parsing the workflow imports {loaded}: import them inside the functions that use them"


def test_no_function_in_the_package_is_long():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
