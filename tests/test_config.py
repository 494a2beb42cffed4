"""Config validation: both shipped configs are valid; bad keys and values are named."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from miqd import config as cfgmod
from miqd.errors import ConfigError


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "miqd25m.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = cfgmod.load(REPO / "config" / name)
    assert cfg["distort"]["severity_scheme"] == "miqd25m"
    assert len(cfg["distort"]["corruptions"]) == 10


def test_defaults_are_filled(demo):
    cfg = cfgmod.validate(demo)
    assert cfg["distort"]["blend"] == {"kernel": 65, "erode_kernel": 3, "erode_iterations": 2,
                                       "band": [0.05, 0.95], "smooth_kernel": 3}
    assert cfg["distort"]["ranks"] == [1, 5, 8, 10, 12]
    assert cfg["seed"] == 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["distort"].update(colour="red"),
         r"unknown key distort\.colour; allowed keys here: blend, corruptions, png_compression"),
        (lambda c: c.update(outdr="x"), r"unknown key outdr; allowed keys here: compare, distort, .*outdir"),
        (lambda c: c["distort"].update(severity_scheme="fancy"),
         r"key distort\.severity_scheme: 'fancy' is not one of \['miqd25m', 'imagenet_c'\]"),
        (lambda c: c["distort"].update(corruptions=["fog", "blurry"]),
         r"key distort\.corruptions\[1\]: unknown corruption 'blurry'; allowed: contrast, pixelate"),
        (lambda c: c["distort"].update(ranks=[1, 5, 8, 10, 13]),
         r"key distort\.ranks \[1, 5, 8, 10, 13\]: need 5 ranks in 1\.\.12"),
        (lambda c: c["distort"].update(ranks=[1, 5, 8, 10]),
         r"key distort\.ranks: \[1, 5, 8, 10\] is too short"),
        (lambda c: c["distort"].update(png_compression=12),
         r"key distort\.png_compression: 12 is greater than the maximum of 9"),
        (lambda c: c["distort"].update(blend={"kernel": 64}), r"key distort\.blend\.kernel: 64 must be odd"),
        (lambda c: c["sources"]["imagenet"].update(shards=0),
         r"key sources\.imagenet\.shards: 0 is less than the minimum of 1"),
        (lambda c: c["roi"].pop("coco"), r"key roi\.coco is missing"),
        (lambda c: c["roi"]["coco"].pop("annotations"),
         r"key roi\.coco\.annotations is required by method 'coco_gt'"),
        (lambda c: c["select"].update(imagenet={"method": "list"}),
         r"key select\.imagenet\.list is required by method 'list'"),
        (lambda c: c["roi"].update(coco={"method": "guess"}),
         r"key roi\.coco\.method: 'guess' is not one of \['coco_gt', 'files', 'coseg'\]"),
        (lambda c: [c["sources"].pop("imagenet"), c["select"].pop("imagenet"), c["roi"].pop("imagenet")],
         r"key train\.runs\[0\]\.task: cls trains on labels of sources\.imagenet, which this config does not "
         r"have; add sources\.imagenet or remove the run"),
        (lambda c: c["infer"].update(tasks=["cls"]),
         r"key train\.runs\[1\]\.task: det is not in infer\.tasks, so it has no labels"),
    ],
)
def test_invalid_configs_name_the_key_and_what_is_allowed(demo, edit, message):
    bad = copy.deepcopy(demo)
    edit(bad)
    with pytest.raises(ConfigError, match=message):
        cfgmod.validate(bad)


def test_stage_json_carries_only_the_stage_and_dataset(demo):
    cfg = cfgmod.validate(demo)
    sub = cfgmod.load(cfgmod.stage_json(cfg, "select", "coco"), whole_workflow=False)
    assert list(sub["sources"]) == ["coco"]
    distort = cfgmod.stage_json(cfg, "distort", "coco")
    assert "sources" not in yaml.safe_load(distort)
    cfg2 = copy.deepcopy(cfg)
    cfg2["sources"]["imagenet"]["shards"] = 5
    assert cfgmod.stage_json(cfg2, "select", "coco") == cfgmod.stage_json(cfg, "select", "coco")


def test_the_snakefile_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distort:\n  severity_scheme: fancy\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "key distort.severity_scheme: 'fancy' is not one of ['miqd25m', 'imagenet_c']" in (
        proc.stdout + proc.stderr
    )
