"""Write the golden fixtures of the MIQD-2.5M recipe from the authors' generator (run once, by hand).

    MIQD_TEST_REFERENCE=1 python tests/conformance/make_golden.py

Writes tests/fixtures/miqd25m/: two small real-photo inputs (and an ROI mask), the generator's
candidate table, and SHA-256 digests of the generator's pixels for every (corruption, candidate)
on the small input and for all 250 images its three steps make from the larger one. The default
test suite (tests/test_golden_recipe.py) checks the recipe against these without the reference.
Rerun after upgrading NumPy, SciPy, OpenCV, Pillow or scikit-image: their versions are recorded.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conformance import refenv  # noqa: E402
from helpers import demo_roi_mask  # noqa: E402
from miqd.io import read_image, write_mask_png  # noqa: E402
from miqd.sources import materialize_demo  # noqa: E402

OUT = TESTS / "fixtures" / "miqd25m"
IMAGE_ID = "demo_val_00000002"
LARGE = (slice(32, 208), slice(272, 496))  # 224x176, 45 % ROI: the generator's step 2 needs >= 161 px a side
SMALL = (slice(120, 184), slice(210, 290))  # 80x64
SEED_OFFSET = 1


def pixels_digest(rgb: np.ndarray) -> str:
    """Digest of the decoded pixels (not of a PNG file, whose bytes depend on the encoder)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest()


def call_seed(corruption_index: int, candidate: int) -> int:
    return 1000 * candidate + corruption_index


def main() -> int:
    gen = refenv.generator()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        materialize_demo(TESTS.parent / "resources" / "demo" / "imagenet" / "sources.yaml", tmp / "demo")
        photo = read_image(tmp / "demo" / f"{IMAGE_ID}.png")
        large, small = photo[LARGE].copy(), photo[SMALL].copy()
        mask = demo_roi_mask(IMAGE_ID)[LARGE]
        Image.fromarray(large).save(OUT / "large.png")
        Image.fromarray(small).save(OUT / "small.png")
        write_mask_png(OUT / "large_mask.png", mask)

        order = gen.call("candidates")
        np.savez(tmp / "small.npz", image=small)
        calls = [(name, k, call_seed(i, k)) for i, name in enumerate(order["corruptions"]) for k in range(1, 13)]
        gen.call("corrupt", image=str(tmp / "small.npz"), calls=calls, out=str(tmp / "out.npz"))
        outputs = np.load(tmp / "out.npz")["outputs"]
        per_candidate = [{"corruption": c, "candidate": k, "seed": s, "sha256": pixels_digest(o)}
                         for (c, k, s), o in zip(calls, outputs, strict=True)]

        (tmp / "src").mkdir()
        Image.fromarray(large).save(tmp / "src" / f"{IMAGE_ID}.png")
        write_mask_png(tmp / "masks" / f"{IMAGE_ID}_binary_mask.png", mask)
        result = gen.call("pipeline", input_dir=str(tmp / "src"), images=[f"{IMAGE_ID}.png"],
                          mask_dir=str(tmp / "masks"), work=str(tmp / "gen"), seed_offset=SEED_OFFSET)
        folder = Path(result["levels_dir"]) / IMAGE_ID
        files = {p.name: pixels_digest(np.asarray(Image.open(p).convert("RGB")))
                 for p in sorted(folder.glob(f"{IMAGE_ID}_*.png"))}

    versions = {name: metadata.version(name) for name in
                ("numpy", "scipy", "opencv-python", "pillow", "scikit-image") if _installed(name)}
    versions.update(imagemagick=order["imagemagick"], wand=order["wand"])
    golden = {
        "source": "MIQD-2.5M generator (github.com/XiaoqiWang/MIQD-2.5M, generate_dataset/) at 18aeabc938fc",
        "versions": versions,
        "image_id": IMAGE_ID,
        "corruptions": order["corruptions"],
        "ranks": order["ranks"],
        "candidates": order["candidates"],
        "per_candidate": per_candidate,
        "pipeline": {"seed_offset": SEED_OFFSET, "files": files},
    }
    (OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT}: {len(per_candidate)} candidates, {len(files)} pipeline images")
    return 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
