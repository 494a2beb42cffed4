"""Runs the MIQD-2.5M generator (the authors' code, unchanged) inside the reference environment.

Never imported by miqd or by the test process: `refenv.py` starts it with the reference
environment's Python, which has Wand and piq (the project's environment has neither). Usage:

    python generator_harness.py GENERATOR_DIR REQUEST.json

The request names an operation; inputs and outputs are .npz files and folders it names. Three
stand-ins make the CPU run possible, and change no arithmetic:
- `cupy` is NumPy (its `cp.random` calls then draw from NumPy's global stream, as the generator's
  NumPy calls do), with a `cupy.ndarray` nothing is an instance of (so no `.get()` is attempted);
- `np.fromstring(bytes, uint8)` (binary mode, removed in NumPy 2.4) is `np.frombuffer`;
- `torch.Tensor.cuda()` returns the tensor (step 2 hard-codes it; its metrics then run on the CPU).
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np


def install_stand_ins(generator_dir: str) -> None:
    cp = types.ModuleType("cupy")
    for key in dir(np):
        if not key.startswith("__"):
            setattr(cp, key, getattr(np, key))
    cp.ndarray = type("NotACupyArray", (), {})
    cp.float_ = np.float64
    cp.random = np.random
    sys.modules["cupy"] = cp

    text_mode = np.fromstring

    def fromstring(data, dtype=float, *args, **kwargs):
        if isinstance(data, (bytes, bytearray, memoryview)):
            return np.frombuffer(data, dtype).copy()
        return text_mode(data, dtype, *args, **kwargs)  # pragma: no cover - not used by the generator

    np.fromstring = fromstring
    try:
        import torch

        torch.Tensor.cuda = lambda self, *a, **k: self
    except ImportError:  # pragma: no cover - the reference environment has torch
        pass
    sys.path.insert(0, generator_dir)


def one_thread() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def op_candidates(req: dict) -> dict:
    from distortions.distortion_levels import get_distortion_ranges
    from pipeline.constants import FINAL_DISTORTION_TYPES, SELECTED_RANKS

    table = {}
    for name in FINAL_DISTORTION_TYPES:
        rows = get_distortion_ranges(name)
        table[name] = [[float(v) for v in np.atleast_1d(np.asarray(row, dtype=np.float64))] for row in rows]
    import wand.version

    return {"candidates": table, "corruptions": list(FINAL_DISTORTION_TYPES), "ranks": list(SELECTED_RANKS),
            "imagemagick": wand.version.MAGICK_VERSION, "wand": wand.version.VERSION}


def op_corrupt(req: dict) -> dict:
    """Each call: seed numpy's global stream, apply the generator's function, keep step 1's uint8."""
    from PIL import Image

    from distortions.distortion_funcs import get_distortion_methods
    from distortions.distortion_levels import get_distortion_ranges

    if req.get("one_thread"):
        one_thread()
    image = np.load(req["image"])["image"]
    methods = get_distortion_methods()
    outputs, seconds = [], []
    for name, candidate, seed in req["calls"]:
        param = get_distortion_ranges(name)[candidate - 1]
        np.random.seed(seed)
        start = time.perf_counter()
        out = methods[name](Image.fromarray(image), param)
        outputs.append(np.uint8(out))  # what step 1 saves: Image.fromarray(np.uint8(image_dis))
        seconds.append(time.perf_counter() - start)
    np.savez_compressed(req["out"], outputs=np.stack(outputs))
    return {"n": len(outputs), "seconds": seconds}


def op_fuse(req: dict) -> dict:
    """Step 3's fuse on five given levels (RGB in, handed over in the BGR order cv2.imread gives)."""
    from pipeline.constants import BG_STRONGER_PAIRS, FG_STRONGER_PAIRS
    from pipeline.synthesize_fg_bg_distortions import create_fused_image

    data = np.load(req["inputs"])
    levels, mask = data["levels"], data["mask"]
    fused = {}
    for fg, bg in FG_STRONGER_PAIRS + BG_STRONGER_PAIRS:
        out = create_fused_image(mask, levels[fg - 1][..., ::-1].copy(), levels[bg - 1][..., ::-1].copy(),
                                 req.get("blur_radius", 32))
        fused[f"fg{fg}_bg{bg}"] = out[..., ::-1]
    np.savez_compressed(req["out"], **fused)
    return {"n": len(fused)}


def op_pipeline(req: dict) -> dict:
    """The three steps as the generator's README runs them, on files; seconds per step."""
    from pipeline.constants import FINAL_DISTORTION_TYPES
    from pipeline.generate_distorted_images import generate_dataset
    from pipeline.select_distortion_levels import select_levels_dataset
    from pipeline.synthesize_fg_bg_distortions import synthesize_dataset

    if req.get("one_thread"):
        one_thread()
    work = Path(req["work"])
    names = req["images"]  # file names in req["input_dir"], in list order (seed = index + offset)
    stems = [Path(n).stem for n in names]
    distortions = list(req.get("distortions") or FINAL_DISTORTION_TYPES)
    seconds = {}
    start = time.perf_counter()
    generate_dataset(req["input_dir"], work / "candidates", names, distortions,
                     seed_offset=req.get("seed_offset", 1))
    seconds["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    select_levels_dataset(work / "candidates", req["input_dir"], work / "levels", stems, distortions,
                          preferred_ext=Path(names[0]).suffix, min_side=req.get("min_side"))
    seconds["select"] = time.perf_counter() - start
    start = time.perf_counter()
    synthesize_dataset(work / "levels", req["mask_dir"], None, stems, distortions)
    seconds["fuse"] = time.perf_counter() - start
    return {"seconds": seconds, "levels_dir": str(work / "levels")}


OPS = {"candidates": op_candidates, "corrupt": op_corrupt, "fuse": op_fuse, "pipeline": op_pipeline}


def main() -> int:
    generator_dir, request = sys.argv[1], sys.argv[2]
    os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "TRUE")
    install_stand_ins(generator_dir)
    req = json.loads(Path(request).read_text())
    result = OPS[req["op"]](req)
    Path(req["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
