"""Distortion speed on one core: this engine against the MIQD-2.5M generator and imagecorruptions.

    python benchmarks/distort.py [--sizes 500x333] [--repeats 3] [--no-generator]

Prints Markdown tables (paste them into docs/performance.md), all measured in the same run, on the
demo espresso photo and its hand-drawn ROI (resized and cropped to each size; 500x333 is its own):
1. a whole source, 250 images, MIQD-2.5M's recipe: the authors' generator as its README runs it
   (step 1: 120 candidates made, PSNR-sorted and written as PNG; step 2: read back, scored with its
   five metrics, 50 levels copied; step 3: levels and mask read, 200 fused images written; imports
   excluded) against this engine's `process_source` making the same 250 images (PSNR + SSIM of
   each, PNGs written), and whether the pixels are the same (the engine fed the generator's stream);
2. per corruption, the 12 candidates: the generator's functions against the engine's;
3. per corruption, ImageNet-C's constants: `imagecorruptions` 1.1.2 against the engine's variant;
4. the PNG writers on the 250 images: time and bytes.

The generator runs in the reference environment of tests/conformance/refenv.py (needs the
authors' code and MIQD_TEST_REFERENCE=1); without it its columns are left out, saying why.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conformance import refenv  # noqa: E402
from helpers import demo_roi_mask  # noqa: E402
from miqd import layout  # noqa: E402
from miqd.distort.blend import blend, soft_mask  # noqa: E402
from miqd.distort.corruptions import IMAGENET_C, available_corruptions, get_corruption  # noqa: E402
from miqd.distort.engine import DistortSettings, SourceJob, distort_image, process_source  # noqa: E402
from miqd.distort.levels import SeverityScheme, compute_levels  # noqa: E402
from miqd.distort.reference import LegacyRandom, reference_corrupt  # noqa: E402
from miqd.io import encode_png, read_image, write_bytes, write_mask_png  # noqa: E402
from miqd.fidelity import SSIMReference, psnr  # noqa: E402
from miqd.sources import materialize_demo  # noqa: E402

IMAGE_ID = "demo_val_00000002"
GENERATOR_ORDER = ("gaussian_noise", "glass_blur", "motion_blur", "defocus_blur", "contrast", "pixelate",
                   "jpeg_compression", "darkness", "snow", "fog")


def source_image(size: tuple[int, int], tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """The demo espresso photo and its ROI, resized (cropped to the aspect) to `size`."""
    materialize_demo(REPO / "resources/demo/imagenet/sources.yaml", tmp / "demo")
    image = read_image(tmp / "demo" / f"{IMAGE_ID}.png")
    mask = demo_roi_mask(IMAGE_ID).astype(np.uint8)
    w, h = size
    H, W = image.shape[:2]
    if (W, H) == (w, h):
        return image, mask > 0
    scale = max(w / W, h / H)
    rw, rh = round(W * scale), round(H * scale)
    image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (rw, rh), interpolation=cv2.INTER_NEAREST)
    top, left = (rh - h) // 2, (rw - w) // 2
    return image[top : top + h, left : left + w].copy(), mask[top : top + h, left : left + w] > 0


def best_of(fn, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ---------------------------------------------------------------------------------------------
# 1. a whole source


def engine_stages(image, mask, repeats: int) -> dict[str, float]:
    settings = DistortSettings(tuple(available_corruptions()))
    t, cals, images = {}, {}, []

    def calls():
        for name in settings.corruptions:
            cals[name] = compute_levels(get_corruption(name), image, "x", settings.scheme, 0)

    t["120 candidates: corrupt, PSNR, rank"] = best_of(calls, repeats)[0]
    soft = soft_mask(mask)

    def blends():
        images.clear()
        for cal in cals.values():
            lv = {x.level: x.image for x in cal.levels}
            images.extend(lv[r] if r == b else blend(lv[r], lv[b], soft) for r, b in layout.PAIRS)

    t["200 fused images"] = best_of(blends, repeats)[0]

    def metrics():
        ref = SSIMReference(image)
        for x in images:
            psnr(image, x)
            ref(x)

    t["PSNR + SSIM of the 250"] = best_of(metrics, repeats)[0]
    with tempfile.TemporaryDirectory() as d:
        t["250 PNGs written"] = best_of(lambda: [write_bytes(Path(d) / f"{i}.png", encode_png(x))
                                                 for i, x in enumerate(images)], repeats)[0]
    t["sum"] = sum(t.values())
    return t


def engine_end_to_end(image, mask, tmp: Path, repeats: int) -> float:
    """The production path a distort job runs for one source (PNGs, manifest rows, levels rows)."""
    cv2.imwrite(str(tmp / "src.png"), image[..., ::-1])
    write_mask_png(tmp / "mask.png", mask)
    job = SourceJob("imagenet", IMAGE_ID, str(tmp / "src.png"), str(tmp / "mask.png"), str(tmp / "e2e"),
                    DistortSettings(tuple(available_corruptions())))
    return best_of(lambda: process_source(job), repeats)[0]


def generator_source(gen, image, mask, tmp: Path) -> tuple[dict[str, float], str]:
    """The generator's three steps on files, and how many of its 250 images ours equal."""
    (tmp / "gsrc").mkdir()
    Image.fromarray(image).save(tmp / "gsrc" / f"{IMAGE_ID}.png")
    write_mask_png(tmp / "gmask" / f"{IMAGE_ID}_binary_mask.png", mask)
    result = gen.call("pipeline", input_dir=str(tmp / "gsrc"), images=[f"{IMAGE_ID}.png"],
                      mask_dir=str(tmp / "gmask"), work=str(tmp / "gen"), seed_offset=1, one_thread=True)
    folder = Path(result["levels_dir"]) / IMAGE_ID
    stream = LegacyRandom(1)
    settings = DistortSettings(GENERATOR_ORDER)
    same, worst = 0, 0
    for d in distort_image(image, mask, IMAGE_ID, settings, streams=lambda c, k: stream):
        theirs = np.asarray(Image.open(folder / layout.distorted_name(IMAGE_ID, d.corruption, d.roi_level,
                                                                      d.bg_level)).convert("RGB"))
        diff = int(np.abs(theirs.astype(int) - d.image.astype(int)).max())
        same += diff == 0
        worst = max(worst, diff)
    return result["seconds"], f"{same}/250 identical (largest difference {worst} grey levels)"


# ---------------------------------------------------------------------------------------------
# 2.-4. per corruption, PNG writers


def generator_candidates_table(gen, image, repeats: int, tmp: Path) -> list[tuple]:
    scheme = SeverityScheme()
    np.savez(tmp / "img.npz", image=image)
    calls = [(name, k, 100 * k + i) for i, name in enumerate(GENERATOR_ORDER) for k in range(1, 13)]
    res = gen.call("corrupt", image=str(tmp / "img.npz"), calls=calls, out=str(tmp / "out.npz"), one_thread=True)
    theirs = np.load(tmp / "out.npz")["outputs"]
    rows = []
    for name in available_corruptions():
        idx = [j for j, c in enumerate(calls) if c[0] == name]
        gen_s = sum(res["seconds"][j] for j in idx)
        bound = get_corruption(name).bind(image)
        ours = [None] * len(idx)

        def run(idx=idx, bound=bound, ours=ours):
            for n, j in enumerate(idx):
                ours[n] = bound(scheme.candidates(name)[calls[j][1] - 1], LegacyRandom(calls[j][2]))

        eng_s = best_of(run, repeats)[0]
        same = sum(np.array_equal(o, theirs[j]) for o, j in zip(ours, idx, strict=True))
        rows.append((name, gen_s, eng_s, same))
    return rows


def imagenet_c_table(image, repeats: int) -> list[tuple]:
    scheme = SeverityScheme("imagenet_c")
    rows = []
    for name in (c for c in available_corruptions() if c != "darkness"):
        ref_t, ours_t, same = [], [], 0
        for s in range(1, 6):
            rt, r = best_of(lambda s=s: reference_corrupt(image, s, name, seed=s), 1 if name == "glass_blur" else repeats)
            params = scheme.candidates(name)[s - 1]
            ot, o = best_of(lambda s=s, p=params: get_corruption(name).apply(image, p, LegacyRandom(s), IMAGENET_C),
                            repeats)
            ref_t.append(rt)
            ours_t.append(ot)
            same += np.array_equal(o, r)
        rows.append((name, statistics.mean(ref_t), statistics.mean(ours_t), same))
    return rows


def png_table(image, mask, repeats: int, tmp: Path) -> list[tuple]:
    settings = DistortSettings(tuple(available_corruptions()))
    images = [d.image for d in distort_image(image, mask, "x", settings)]
    writers = {
        "isal level 1 (default)": lambda x: encode_png(x, "isal", 1),
        "zlib level 1, rle (OpenCV)": lambda x: encode_png(x, "zlib", 1, "rle"),
        "Pillow optimize=True (generator's candidates)": None,
    }
    rows = []
    for label, enc in writers.items():
        if enc is None:
            def run():
                for i, x in enumerate(images):
                    Image.fromarray(x).save(tmp / f"p{i}.png", optimize=True)
                return sum((tmp / f"p{i}.png").stat().st_size for i in range(len(images)))
            seconds, size = best_of(run, 1)
        else:
            seconds, size = best_of(lambda enc=enc: sum(len(enc(x)) for x in images), repeats)
        rows.append((label, seconds, size / 1e6))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["500x333"])
    p.add_argument("--repeats", type=int, default=3, help="best of N")
    p.add_argument("--no-generator", action="store_true", help="leave out the generator's columns")
    args = p.parse_args()
    cv2.setNumThreads(1)
    gen, why = None, "--no-generator"
    if not args.no_generator:
        try:
            gen = refenv.generator()
        except refenv.Unavailable as err:
            why = str(err)
    print(f"# distort benchmark: one core, best of {args.repeats}\n")
    if gen is None:
        print(f"(the generator's columns are left out: {why})\n")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            image, mask = source_image(size, tmp)
            print(f"## {size_text} (ROI {mask.mean():.0%} of the image)\n")
            stages = engine_stages(image, mask, args.repeats)
            e2e = engine_end_to_end(image, mask, tmp, args.repeats)
            print("| engine, MIQD-2.5M recipe | s |\n|---|---:|")
            for key, value in stages.items():
                print(f"| {key} | {value:.2f} |")
            print(f"| `process_source` end to end (what a distort job runs) | {e2e:.2f} |\n")
            if gen is not None:
                seconds, same = generator_source(gen, image, mask, tmp)
                total = sum(seconds.values())
                print("| generator, its three steps | s |\n|---|---:|")
                print(f"| step 1: 120 candidates, PSNR-sorted, written | {seconds['generate']:.2f} |")
                print(f"| step 2: read back, five metrics, 50 levels copied | {seconds['select']:.2f} |")
                print(f"| step 3: levels + mask read, 200 fused written | {seconds['fuse']:.2f} |")
                print(f"| total | {total:.2f} |\n")
                print(f"Whole source: generator {total:.2f} s, engine {e2e:.2f} s: **{total / e2e:.1f}x**; "
                      f"pixels: {same}.\n")
                print("| corruption (12 candidates) | generator s | engine s | speed-up | identical |")
                print("|---|---:|---:|---:|---:|")
                for name, gs, es, n in generator_candidates_table(gen, image, args.repeats, tmp):
                    print(f"| {name} | {gs:.3f} | {es:.3f} | {gs / es:.1f}x | {n}/12 |")
                print()
            print("| corruption (ImageNet-C constants, per call) | imagecorruptions s | engine s | speed-up "
                  "| identical |\n|---|---:|---:|---:|---:|")
            for name, rt, ot, n in imagenet_c_table(image, args.repeats):
                print(f"| {name} | {rt:.4f} | {ot:.4f} | {rt / ot:.1f}x | {n}/5 |")
            print("\n| PNG writer, the 250 images | s | MB |\n|---|---:|---:|")
            for label, seconds, mb in png_table(image, mask, args.repeats, tmp):
                print(f"| {label} | {seconds:.2f} | {mb:.1f} |")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
