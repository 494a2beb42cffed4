"""Distortion speed on one core: this engine against a path built on imagecorruptions.

    python benchmarks/distort.py [--sizes 500x375 224x224] [--repeats 3]

Prints Markdown tables (paste them into the README's performance section):
1. seconds per corruption call, per corruption (mean over ImageNet-C severities 1-5), and the
   mean PSNR of both outputs, so speed is compared at matching output statistics;
2. a whole source image (50 corruption calls under ImageNet-C constants, 200 region blends, 250
   PSNR + SSIM, 250 PNG writes), stage by stage, for both paths, and the ratio.

The reference path is what a script on top of `imagecorruptions` 1.1.2 does: its `corrupt()`,
the same soft-mask recipe in float64 NumPy, scikit-image's PSNR and SSIM, and Pillow's default
PNG writer. Both paths are timed in the same run, single-threaded.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from miqd import layout  # noqa: E402
from miqd.distort.blend import soft_mask  # noqa: E402
from miqd.distort.corruptions import available_corruptions, get_corruption  # noqa: E402
from miqd.distort.engine import DistortSettings, SourceJob, process_source  # noqa: E402
from miqd.distort.levels import SeverityScheme  # noqa: E402
from miqd.distort.reference import reference_corrupt  # noqa: E402
from miqd.io import write_mask_png  # noqa: E402
from miqd.quality import luma, psnr  # noqa: E402
from miqd.roi import instances_mask  # noqa: E402
from miqd.seeding import rng_for  # noqa: E402
from miqd.sources import materialize_demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGENET_C = [c for c in available_corruptions() if c != "darkness"]


def source_image(size: tuple[int, int], tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """The demo espresso photo and its hand-drawn ROI, resized (cropped to the aspect) to `size`."""
    demo = tmp / "demo"
    materialize_demo(REPO / "resources/demo/imagenet/sources.yaml", demo)
    image = np.asarray(Image.open(demo / "demo_val_00000002.png").convert("RGB"))
    polygons = json.loads((REPO / "resources/demo/imagenet/roi_polygons.json").read_text())
    anns = [a for a in polygons["annotations"] if a["image_id"] == 2]
    mask = instances_mask(anns, *image.shape[:2]).astype(np.uint8)
    w, h = size
    H, W = image.shape[:2]
    scale = max(w / W, h / H)
    rw, rh = round(W * scale), round(H * scale)
    image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (rw, rh), interpolation=cv2.INTER_NEAREST)
    top, left = (rh - h) // 2, (rw - w) // 2
    return image[top : top + h, left : left + w].copy(), mask[top : top + h, left : left + w] > 0


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ---------------------------------------------------------------------------------------------
# the reference path


def reference_source(image: np.ndarray, mask: np.ndarray, out: Path) -> dict[str, float]:
    t = {}
    start = time.perf_counter()
    levels = {}
    for name in IMAGENET_C + ["darkness"]:
        for s in range(1, 6):
            if name == "darkness":  # not in imagecorruptions: the same HSV-value shift, via skimage
                from skimage.color import hsv2rgb, rgb2hsv

                hsv = rgb2hsv(image / 255.0)
                hsv[..., 2] = np.clip(hsv[..., 2] - 0.1 * s, 0, 1)
                levels[name, s] = np.uint8(np.clip(hsv2rgb(hsv), 0, 1) * 255)
            else:
                levels[name, s] = reference_corrupt(image, s, name, seed=s)
    t["corruption calls (50)"] = time.perf_counter() - start

    start = time.perf_counter()
    m = cv2.GaussianBlur(mask.astype(np.float64), (65, 65), 0)
    m[cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0] = 1
    band = (m > 0.05) & (m < 0.95)
    m = m[..., None]
    images = {}
    for name in available_corruptions():
        for r, b in layout.PAIRS:
            if r == b:
                images[name, r, b] = levels[name, r]
                continue
            x = levels[name, r] * m + levels[name, b] * (1 - m)
            smooth = cv2.GaussianBlur(x, (3, 3), 0)
            x[band] = 0.5 * x[band] + 0.5 * smooth[band]
            images[name, r, b] = np.uint8(np.clip(x, 0, 255))
    t["region blends (200)"] = time.perf_counter() - start

    start = time.perf_counter()
    y = luma(image)
    for x in images.values():
        peak_signal_noise_ratio(image, x, data_range=255)
        structural_similarity(y, luma(x), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=255)
    t["PSNR + SSIM (250)"] = time.perf_counter() - start

    start = time.perf_counter()
    for (name, r, b), x in images.items():
        Image.fromarray(x).save(out / f"{name}_{r}_{b}.png")
    t["PNG writes (250)"] = time.perf_counter() - start
    t["total"] = sum(t.values())
    return t


# ---------------------------------------------------------------------------------------------
# this engine


def engine_source(image, mask, tmp: Path, scheme: str, repeats: int, png: tuple[int, str]) -> dict:
    """Stage timings from the engine's own functions, and the production path end to end."""
    from miqd.distort.blend import blend
    from miqd.distort.levels import compute_levels
    from miqd.io import encode_png, write_bytes
    from miqd.quality import SSIMReference

    settings = DistortSettings(tuple(available_corruptions()), SeverityScheme(scheme),
                               png_compression=png[0], png_strategy=png[1])
    t = {}
    cals = {}

    def calls():
        for name in available_corruptions():
            cals[name] = compute_levels(get_corruption(name), image, "x", settings.scheme, 0)

    t[f"corruption calls ({len(settings.scheme.severities) * 10})"] = timed(calls, repeats)[0]
    soft = soft_mask(mask)
    images = []

    def blends():
        images.clear()
        for name, cal in cals.items():
            lv = {x.level: x.image for x in cal.levels}
            for r, b in layout.PAIRS:
                images.append(lv[r] if r == b else blend(lv[r], lv[b], soft))

    t["region blends (200)"] = timed(blends, repeats)[0]

    def metrics():
        ref = SSIMReference(image)
        for x in images:
            psnr(image, x)
            ref(x)

    t["PSNR + SSIM (250)"] = timed(metrics, repeats)[0]
    out = tmp / "engine_png"
    out.mkdir(exist_ok=True)

    def writes():
        for i, x in enumerate(images):
            write_bytes(out / f"{i}.png", encode_png(x, *png))

    t["PNG writes (250)"] = timed(writes, repeats)[0]
    t["total"] = sum(t.values())

    # the production code path as the distort job runs it, end to end
    cv2.imwrite(str(tmp / "src.png"), image[..., ::-1])
    write_mask_png(tmp / "mask.png", mask)
    job = SourceJob("imagenet", "x", str(tmp / "src.png"), str(tmp / "mask.png"), str(tmp / "e2e"), settings)
    t["process_source end to end"] = timed(lambda: process_source(job), repeats)[0]
    return t


def corruption_table(image: np.ndarray, repeats: int) -> list[tuple]:
    rows = []
    for name in IMAGENET_C:
        c = get_corruption(name)
        ref_t, ours_t, ref_p, ours_p = [], [], [], []
        for s in range(1, 6):
            rt, r = timed(lambda: reference_corrupt(image, s, name, seed=s),
                          1 if name == "glass_blur" else repeats)
            ot, o = timed(lambda: c(image, s, rng_for(0, "bench", name, float(s))), repeats)
            ref_t.append(rt)
            ours_t.append(ot)
            ref_p.append(psnr(image, r))
            ours_p.append(psnr(image, o))
        rt, ot = statistics.mean(ref_t), statistics.mean(ours_t)
        rows.append((name, rt, ot, rt / ot, statistics.mean(ref_p), statistics.mean(ours_p)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["500x375", "224x224"])
    p.add_argument("--repeats", type=int, default=3, help="best of N (glass blur's reference: 1)")
    p.add_argument("--png", default="1:rle", help="engine PNG setting level:strategy (default 1:rle)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    level, strategy = args.png.split(":")
    png = (int(level), strategy)

    print(f"# distort benchmark: one core, best of {args.repeats}; engine PNG = zlib level {level}, "
          f"strategy {strategy}; reference PNG = Pillow default\n")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            image, mask = source_image(size, tmp)
            print(f"## {size_text} (ROI {mask.mean():.0%} of the image)\n")
            print("| corruption | imagecorruptions s/call | engine s/call | speed-up | PSNR ref | PSNR engine |")
            print("|---|---:|---:|---:|---:|---:|")
            for name, rt, ot, ratio, rp, op in corruption_table(image, args.repeats):
                print(f"| {name} | {rt:.4f} | {ot:.4f} | {ratio:.1f}x | {rp:.2f} | {op:.2f} |")
            print()
            (tmp / "ref_png").mkdir()
            ref = reference_source(image, mask, tmp / "ref_png")
            eng = engine_source(image, mask, tmp, "imagenet_c", args.repeats, png)
            ranked = engine_source(image, mask, tmp, "psnr_ranked", args.repeats, png)
            ref_mb = sum(f.stat().st_size for f in (tmp / "ref_png").iterdir()) / 1e6
            eng_mb = sum(f.stat().st_size for f in (tmp / "engine_png").iterdir()) / 1e6
            print("| whole source, 250 PNGs | reference s | engine s | speed-up |")
            print("|---|---:|---:|---:|")
            for key in ("corruption calls (50)", "region blends (200)", "PSNR + SSIM (250)",
                        "PNG writes (250)", "total"):
                print(f"| {key} | {ref[key]:.2f} | {eng[key]:.2f} | {ref[key] / eng[key]:.1f}x |")
            e2e = eng["process_source end to end"]
            print(f"| engine `process_source` end to end (ImageNet-C constants) | {ref['total']:.2f} | "
                  f"{e2e:.2f} | {ref['total'] / e2e:.1f}x |")
            e2e_r = ranked["process_source end to end"]
            print(f"| engine `process_source` end to end (PSNR-ranked, 120 calls) | {ref['total']:.2f} | "
                  f"{e2e_r:.2f} | {ref['total'] / e2e_r:.1f}x |")
            print(f"\nPNG bytes for the 250 images: reference {ref_mb:.1f} MB, engine {eng_mb:.1f} MB\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
