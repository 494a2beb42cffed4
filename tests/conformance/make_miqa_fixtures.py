"""Write the MIQA fixtures of the default suite (run by hand, with the reference available).

    MIQD_TEST_REFERENCE=1 python tests/conformance/make_miqa_fixtures.py

Writes tests/fixtures/miqa/:
- export/: the tiny export tests/miqa_fixture.py builds (label CSVs, split CSVs, COCO annotations,
  empty images where MIQA's loaders look), checked by MIQA's loaders before it is written;
- checkpoint_keys.json: the top-level keys and the state-dict keys and shapes of every checkpoint
  MIQA's train.py writes (RA-MIQA and the five baselines), built by MIQA's own code, with the torch,
  torchvision and timm versions they were built with.
tests/test_miqa_interop.py loads synthetic checkpoints of exactly that layout and compares miqd's
export with export/; tests/test_conformance_miqa.py checks both fixtures are still what MIQA makes.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import miqa_fixture  # noqa: E402
from conformance import refenv  # noqa: E402

OUT = TESTS / "fixtures" / "miqa"


def their_samples(miqa: refenv.Miqa, root: Path) -> dict:
    from miqd import layout

    splits = {d: layout.split_upstream(str(root), d) for d in ("imagenet", "coco")}
    return miqa.call("datasets", tasks={
        "cls": {"root": str(root / "miqa_cls"), "splits": splits["imagenet"]},
        "det": {"root": str(root / "miqa_det"), "splits": splits["coco"]},
        "ins": {"root": str(root / "miqa_ins"), "det_root": str(root / "miqa_det"), "splits": splits["coco"]}})


def main() -> int:
    miqa = refenv.miqa()
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "out"
        miqa_fixture.build(built)
        samples = their_samples(miqa, built)
        n = {k: len(v["paths"]) for k, v in samples.items()}
        if min(n.values()) == 0:
            raise SystemExit(f"MIQA's loaders found no samples in some part of the export: {n}")
        export = OUT / "export"
        shutil.rmtree(export, ignore_errors=True)
        for rel, data in miqa_fixture.exported_files(built).items():
            (export / rel).parent.mkdir(parents=True, exist_ok=True)
            (export / rel).write_bytes(data)
        image = Path(tmp) / "img.png"
        Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(image)
        made = miqa.call("checkpoints", workdir=str(Path(tmp) / "ckpt"), task="cls", metric="composite",
                         images=[str(image)])
    layout_ = {"versions": {p: metadata.version(p) for p in ("torch", "torchvision", "timm")},
               "models": {name: {"top_level": e["top_level"], "keys": e["keys"]} for name, e in made.items()}}
    (OUT / "checkpoint_keys.json").write_text(json.dumps(layout_, indent=1) + "\n")
    print(f"wrote {OUT}: export read by MIQA's loaders as {n}; key layouts of {', '.join(made)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
