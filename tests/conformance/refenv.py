"""The authors' reference code, run in an environment of its own, for conformance tests and benchmarks.

Opt in with MIQD_TEST_REFERENCE=1 (CI does). The reference code is looked for in
$MIQD_REFERENCE_DIR, else in `shared/reference` beside the checkout (or beside one of its parent
folders); without it, or without the opt-in, the conformance tests skip and say why.

What the reference needs and the project does not goes into a separate virtual environment under
~/.cache/miqd/reference/, never into the project's: that environment sees the project's packages
through a .pth file (so both run the same NumPy, SciPy, OpenCV, Pillow, torch and timm) and adds
its own on top:
- the generator: Wand and ImageMagick's MagickWand library (motion blur), piq (level-selection
  metrics). ImageMagick comes from Debian, installed only when opted in and running as root.
- MIQA: mmsegmentation (its region encoder is mmseg's VisionTransformer; MIQA's requirements.txt
  says `mmseg==1.3.0`, but the package that provides `mmseg` is mmsegmentation, 1.2.2 its last
  release) with the text utilities its model zoo imports, and gdown, which its inference script
  imports. mmsegmentation needs mmcv with compiled ops: the project's mmdet extra
  (`make mmdet`) provides it.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GENERATOR_PACKAGES = ["Wand==0.7.2", "piq==0.8.0"]
MAGICKWAND_DEBIAN = "libmagickwand-6.q16-6"
MIQA_PACKAGES = ["mmsegmentation==1.2.2", "ftfy==6.3.1", "regex==2026.11.19", "wcwidth==0.9.4", "gdown==5.2.0",
                 "beautifulsoup4==4.15.0", "soupsieve==4.1.3"]


class Unavailable(RuntimeError):
    """The reference cannot run here; the message says why and what to do."""


def reference_dir() -> Path:
    """$MIQD_REFERENCE_DIR, else the first `shared/reference` beside the checkout or one of its parents."""
    if os.environ.get("MIQD_REFERENCE_DIR"):
        return Path(os.environ["MIQD_REFERENCE_DIR"])
    for folder in REPO.parents:
        if (folder / "shared" / "reference").is_dir():
            return folder / "shared" / "reference"
    return REPO.parent / "shared" / "reference"


def _require_opt_in() -> None:
    if os.environ.get("MIQD_TEST_REFERENCE") != "1":
        raise Unavailable("conformance tests against the authors' code are opt-in: MIQD_TEST_REFERENCE=1 "
                          "(builds a separate environment under ~/.cache/miqd/reference/; as root it also "
                          f"installs Debian's {MAGICKWAND_DEBIAN})")


def _magickwand() -> None:
    if ctypes.util.find_library("MagickWand-6.Q16") or ctypes.util.find_library("MagickWand-7.Q16"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"ImageMagick's MagickWand library is missing (Debian: {MAGICKWAND_DEBIAN}); "
                          "install it, or run the tests as root to have them install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(["apt-get", "install", "-y", "-q", MAGICKWAND_DEBIAN], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(["apt-get", "install", "-y", "-q", MAGICKWAND_DEBIAN], env=env,
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"apt-get install {MAGICKWAND_DEBIAN} failed: {proc.stderr[-500:]}")


def environment(packages: list[str], name: str) -> Path:
    """The Python of a virtual environment layered over the project's, with `packages` added."""
    base = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(json.dumps([sys.prefix, base, sorted(packages)]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "miqd" / "reference"
    venv = root / f"{name}-{key}"
    python = venv / "bin" / "python"
    stamp = venv / ".ready"
    if stamp.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "miqd-project.pth").write_text(base + "\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *packages],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"installing {packages} into {venv} failed: {proc.stderr[-800:]}")
    stamp.write_text("\n".join(packages) + "\n")
    return python


class Reference:
    """Reference code run through a harness script, one call per operation."""

    harness = ""
    label = ""

    def __init__(self, python: Path, code: Path):
        self.python, self.code = python, code

    def call(self, op: str, **request) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            req = dict(request, op=op, result=str(Path(tmp) / "result.json"))
            path = Path(tmp) / "request.json"
            path.write_text(json.dumps(req))
            env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                       OPENBLAS_NUM_THREADS="1")
            proc = subprocess.run([str(self.python), str(HERE / self.harness), str(self.code), str(path)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"{self.label}'s {op} failed:\n{proc.stderr[-4000:]}")
            return json.loads(Path(req["result"]).read_text())


class Generator(Reference):
    """The MIQD-2.5M generator (`miqd25m_generator/`)."""

    harness, label = "generator_harness.py", "the generator"


class Miqa(Reference):
    """MIQA (`miqa/`): its dataset classes, models, checkpoint format and inference."""

    harness, label = "miqa_harness.py", "MIQA"


def generator() -> Generator:
    """The generator, ready to call; `Unavailable` with the reason where it cannot run."""
    _require_opt_in()
    code = reference_dir() / "miqd25m_generator"
    if not (code / "distortions" / "distortion_funcs.py").is_file():
        raise Unavailable(f"the MIQD-2.5M generator is not at {code}; set MIQD_REFERENCE_DIR to the folder "
                          "holding miqd25m_generator/")
    _magickwand()
    return Generator(environment(GENERATOR_PACKAGES, "generator"), code)


def miqa() -> Miqa:
    """MIQA, ready to call; `Unavailable` with the reason where it cannot run."""
    _require_opt_in()
    code = reference_dir() / "miqa"
    if not (code / "models" / "RA_MIQA.py").is_file():
        raise Unavailable(f"MIQA is not at {code}; set MIQD_REFERENCE_DIR to the folder holding miqa/")
    try:
        import mmcv.ops  # noqa: F401
    except Exception as err:  # noqa: BLE001 - whatever stops it, the reason is the same
        raise Unavailable(f"MIQA's region encoder needs mmcv with compiled ops ({type(err).__name__}: {err}); "
                          "install the mmdet extra (`make mmdet`, or MIQD_WITH_MMDET=1 make test)") from None
    return Miqa(environment(MIQA_PACKAGES, "miqa"), code)
