"""Source datasets: candidate images with their labels, split into static shards.

- imagenet: an ImageNet-style folder plus a ground-truth file with one `<class index>,<class name>`
  line per image in file order (the upstream `ground_truth_ilsvrc2012_val.txt` format); the file
  on line i is `filename_template.format(index=i)`. Shards are contiguous blocks of the classes
  present, so the top-k-per-class selection of a class happens inside one job.
- coco: a COCO-format instances json; the candidates are the images with at least one
  annotation (4,952 of val2017). Shards are contiguous blocks of the sorted image ids.

A shard's members depend only on the dataset and the shard count, which is what keeps the DAG
static: the number of jobs is known from the config alone.

The embedded demo's photos ship inside installed packages; `materialize_demo` writes them out.
"""

from __future__ import annotations

import importlib.util
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from miqd.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def package_resource(package: str, resource: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"package {package!r} is not installed; it ships the demo photo {resource} "
            f"(pip install -e . installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / resource
    if not path.is_file():
        raise InputError(f"{resource} is not in the installed package {package!r} ({path})")
    return path


def materialize_demo(spec_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the demo photos named in `spec_path` into `out_dir` as RGB PNGs of the given size."""
    from PIL import Image

    from miqd.io import write_bytes

    spec = yaml.safe_load(Path(spec_path).read_text())
    written = []
    for entry in spec["images"]:
        src = package_resource(entry["package"], entry["resource"])
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        size = tuple(entry["size"])
        if rgb.size != size:
            rgb = rgb.resize(size, Image.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, format="PNG", compress_level=6)
        out = Path(out_dir) / entry["file"]
        write_bytes(out, buf.getvalue())
        written.append(out)
    return written


# ---------------------------------------------------------------------------------------------
# candidates


def read_imagenet_ground_truth(path: str | Path) -> list[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ImageNet ground truth {path} does not exist (sources.imagenet.ground_truth)")
    labels = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        index, sep, name = line.partition(",")
        if not sep or not index.strip().isdigit():
            raise InputError(
                f"{path}:{lineno}: expected '<class index>,<class name>', got {line!r}"
            )
        labels.append((int(index), name.strip()))
    return labels


def imagenet_candidates(src: dict) -> pd.DataFrame:
    import pandas as pd

    labels = read_imagenet_ground_truth(src["ground_truth"])
    template = src["filename_template"]
    images = Path(src["images"])
    names = [template.format(index=i) for i in range(1, len(labels) + 1)]
    return pd.DataFrame(
        {
            "image_id": [Path(n).stem for n in names],
            "file_name": names,
            "path": [str(images / n) for n in names],
            "class_index": [c for c, _ in labels],
            "class_name": [n for _, n in labels],
        }
    )


@lru_cache(maxsize=4)
def read_coco(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"COCO annotation file {p} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"COCO annotation file {p} is not valid JSON: {err}") from None
    for key in ("images", "annotations"):
        if key not in data:
            raise InputError(f"COCO annotation file {p} has no {key!r} list")
    return data


def segmentation_rles(segmentation, height: int, width: int) -> list[dict]:
    """A COCO annotation's segmentation (polygons, compressed or uncompressed RLE) as RLE dicts."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        return mask_utils.frPyObjects(segmentation, height, width) if segmentation else []
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd regions)
        return [mask_utils.frPyObjects(segmentation, height, width)]
    return [segmentation]


def annotation_rle(segmentation, height: int, width: int) -> str:
    """One annotation's mask as compressed RLE counts (the infer stage's `masks_rle` format)."""
    from pycocotools import mask as mask_utils

    rles = segmentation_rles(segmentation, height, width)
    if not rles:
        rles = mask_utils.encode(np.zeros((height, width, 1), np.uint8, order="F"))
    counts = mask_utils.merge(rles)["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def annotations_by_image(data: dict) -> dict[int, list[dict]]:
    """A COCO json's annotations grouped by their (integer) image id."""
    anns: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        anns.setdefault(int(ann["image_id"]), []).append(ann)
    return anns


def coco_image_id(numeric_id: int) -> str:
    """COCO's own file stem: the id zero-padded to 12 digits."""
    return f"{numeric_id:012d}"


def coco_candidates(src: dict) -> pd.DataFrame:
    import pandas as pd

    data = read_coco(src["annotations"])
    cats: dict[int, set[int]] = {}
    for ann in data["annotations"]:
        cats.setdefault(int(ann["image_id"]), set()).add(int(ann["category_id"]))
    images = Path(src["images"])
    rows = []
    for im in sorted(data["images"], key=lambda im: int(im["id"])):
        numeric = int(im["id"])
        if numeric not in cats:
            continue
        rows.append(
            {
                "image_id": coco_image_id(numeric),
                "file_name": im["file_name"],
                "path": str(images / im["file_name"]),
                "coco_id": numeric,
                "categories": sorted(cats[numeric]),
            }
        )
    return pd.DataFrame(rows, columns=["image_id", "file_name", "path", "coco_id", "categories"])


CANDIDATES = {"imagenet": imagenet_candidates, "coco": coco_candidates}


def candidates(dataset: str, src: dict) -> pd.DataFrame:
    return CANDIDATES[dataset](src)


def shard_members(dataset: str, table: pd.DataFrame, n_shards: int, shard: int) -> pd.DataFrame:
    """The rows of `table` (all candidates) that belong to shard `shard` of `n_shards`."""
    if not 0 <= shard < n_shards:
        raise InputError(f"shard {shard} is out of range 0..{n_shards - 1} for {dataset}")
    key = "class_index" if dataset == "imagenet" else "coco_id"
    blocks = np.array_split(np.unique(table[key].to_numpy()), n_shards)
    return table[table[key].isin(blocks[shard])].reset_index(drop=True)
