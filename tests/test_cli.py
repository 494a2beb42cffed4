"""The `miqd` command line: every --help, paths from any directory, output formats, overrides."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers import REPO, demo_config, snakemake
from miqd import cli, cli_paths, layout
from miqd import config as cfgmod
from miqd.cli_help import HelpFormatter
from miqd.distort.corruptions import available_corruptions
from miqd.errors import ConfigError, InputError


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBCOMMANDS = sorted(_subcommands())


def test_every_command_is_wired():
    assert len(SUBCOMMANDS) == len(cli.COMMANDS) == 24
    assert {"select", "distort", "infer", "label", "train", "evaluate", "score", "corrupt"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_help_has_a_description_defaults_choices_and_an_example(name):
    parser = _subcommands()[name]
    text = parser.format_help()
    summary = parser.description.splitlines()[0]
    assert summary.endswith(".") and len(summary) < 110 and summary in text
    assert "default" in text
    assert "Example:\n  miqd " + name in text
    formatter = HelpFormatter(prog="miqd")
    for action in parser._actions:
        if action.option_strings and not action.required and not isinstance(action, argparse._HelpAction):
            shown = formatter._get_help_string(action)
            assert "default" in shown or "required" in shown, f"{name} {action.option_strings[0]}: {shown}"
        if {"--task", "--tasks", "--baselines"} & set(action.option_strings):
            assert "{cls,det,ins}" in text, name
        if "--dataset" in action.option_strings:
            assert "{imagenet,coco}" in text, name


def test_corrupt_help_lists_every_corruption_and_scheme():
    text = _subcommands()["corrupt"].format_help()
    flat = " ".join(text.split())
    for name in available_corruptions():
        assert name in flat
    assert "one of: imagenet_c, miqd25m (default: miqd25m)" in flat
    assert ".jpg/.jpeg (JPEG quality 95)" in flat


def test_building_the_parser_loads_no_heavy_library():
    """`miqd --help` (and every rule's `miqd ...` start) builds the whole parser: it must stay cheap."""
    code = ("import sys; from miqd import cli; cli.build_parser(); "
            "print(' '.join(m for m in ('cv2', 'numba', 'scipy', 'torch', 'pandas', 'numpy', 'PIL', "
            "'miqd.config', 'miqd.distort.corruptions') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_the_tasks_are_the_layouts_and_written_once():
    assert cli.TASKS == tuple(layout.TASK_DATASET) == ("cls", "det", "ins")
    source = Path(cli.__file__).read_text()
    assert '"cls", "det", "ins"' not in source and "'cls', 'det', 'ins'" not in source


def test_quiet_before_or_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["-q", "merge", "--out", "m", "a"]).quiet
    assert parser.parse_args(["merge", "-q", "--out", "m", "a"]).quiet
    assert not parser.parse_args(["merge", "--out", "m", "a"]).quiet


def test_an_unknown_corruption_is_refused_with_the_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["corrupt", "x.png", "--corruption", "blur", "--candidate", "1", "--out", "y.png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'blur'" in err and "'gaussian_noise'" in err


# ---------------------------------------------------------------------------------------------
# output images: the suffix picks the format

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".webp": b"RIFF",
         ".bmp": b"BM", ".tif": b"II*\x00", ".tiff": b"II*\x00"}


@pytest.mark.parametrize("suffix", sorted(MAGIC))
def test_corrupt_writes_the_format_its_suffix_names(suffix, tmp_path, small_image, monkeypatch, capsys):
    Image.fromarray(small_image).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)  # relative paths, from a directory outside the repository
    assert cli.main(["corrupt", "photo.png", "--corruption", "contrast", "--candidate", "6",
                     "--out", f"out/fog{suffix}"]) == 0
    data = (tmp_path / "out" / f"fog{suffix}").read_bytes()
    assert data.startswith(MAGIC[suffix])
    if suffix == ".webp":
        assert data[8:12] == b"WEBP"
    with Image.open(tmp_path / "out" / f"fog{suffix}") as im:
        assert im.size == (small_image.shape[1], small_image.shape[0]) and im.mode == "RGB"
    assert f"out/fog{suffix}: contrast candidate 6 of miqd25m" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["fog.gif", "fog"])
def test_corrupt_refuses_a_suffix_with_no_format_before_any_work(name, tmp_path, small_image, capsys):
    Image.fromarray(small_image).save(tmp_path / "photo.png")
    assert cli.main(["corrupt", str(tmp_path / "photo.png"), "--corruption", "fog", "--candidate", "2",
                     "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    what = "suffix '.gif'" if name.endswith(".gif") else "no suffix"
    assert f"--out {tmp_path / name}: {what} names no image format this command writes" in err
    assert "one of: .png, .jpg/.jpeg (JPEG quality 95), .webp (lossless), .bmp, .tif/.tiff" in err
    assert not (tmp_path / name).exists()


def test_the_plot_commands_refuse_a_suffix_other_than_png(tmp_path, capsys):
    assert cli.main(["plot-distort", "--manifest", str(tmp_path / "m.parquet"), "--quality",
                     str(tmp_path / "q.jpg"), "--examples", str(tmp_path / "e.png")]) == 2
    assert f"--quality {tmp_path / 'q.jpg'}: suffix '.jpg' names no image format this command writes; " \
           "the format follows the suffix, one of: .png" in capsys.readouterr().err
    assert cli.main(["validation-table", "--csv", str(tmp_path / "t.csv"), "--md", str(tmp_path / "t.md"),
                     "--plot", str(tmp_path / "t.webp"), str(tmp_path / "trials.parquet")]) == 2
    assert "--plot" in capsys.readouterr().err and not (tmp_path / "t.csv").exists()


# ---------------------------------------------------------------------------------------------
# configs and checkpoints from any directory


def test_a_config_file_read_from_elsewhere_takes_its_paths_from_its_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = cli_paths.load_config(str(REPO / "config" / "config.yaml"))
    assert config["outdir"] == str(REPO / "results")
    assert config["sources"]["imagenet"]["ground_truth"] == str(REPO / "resources/demo/imagenet/ground_truth.txt")
    assert config["sources"]["coco"]["images"] == str(REPO / "results/demo_sources/coco")
    assert config["roi"]["coco"]["annotations"] == str(REPO / "resources/demo/coco/instances_demo.json")
    assert config["infer"]["registry"] == str(REPO / "config/models_demo.yaml")
    assert Path(config["sources"]["imagenet"]["materialize"]).is_file()
    # what the rules pass (inline JSON) is used exactly as given, wherever it runs
    inline = cfgmod.stage_json(cfgmod.load(REPO / "config" / "config.yaml"), "select", "imagenet")
    assert cli_paths.load_config(inline, whole_workflow=False)["outdir"] == "results"


def test_from_the_project_a_config_file_is_read_as_before(monkeypatch):
    monkeypatch.chdir(REPO)
    config = cli_paths.load_config("config/config.yaml")
    assert config == cfgmod.load("config/config.yaml")
    assert config["outdir"] == "results"
    assert config["sources"]["imagenet"]["ground_truth"] == "resources/demo/imagenet/ground_truth.txt"


def test_a_standin_template_from_elsewhere_is_copied_with_absolute_paths(tmp_path, monkeypatch):
    template = REPO / "config" / "miqd25m.yaml"
    monkeypatch.chdir(tmp_path)
    with cli_paths.rebased_file(template) as copy_path:
        assert copy_path != template and copy_path.name == "miqd25m.yaml"
        raw = yaml.safe_load(copy_path.read_text())
    assert raw["sources"]["imagenet"]["ground_truth"] == str(REPO / "resources/upstream/ground_truth_ilsvrc2012_val.txt")
    assert raw["infer"]["registry"] == str(REPO / "config" / "models.yaml")
    assert raw["train"]["region_encoder"] == yaml.safe_load(template.read_text())["train"]["region_encoder"]
    monkeypatch.chdir(REPO)
    with cli_paths.rebased_file("config/miqd25m.yaml") as same:
        assert same == Path("config/miqd25m.yaml")


def test_score_finds_the_default_config_and_names_the_missing_checkpoint(tmp_path, monkeypatch, capsys):
    model = REPO / "results" / "train" / "ra_miqa_cls_composite" / "model.pt"
    if model.exists():
        pytest.skip("the demo is trained in this checkout: there is no missing checkpoint to report")
    (tmp_path / "photo.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert cli_paths.package_project() == REPO
    assert cli.main(["score", "photo.png"]) == 2
    err = capsys.readouterr().err
    assert (f"run ra_miqa_cls_composite of config {REPO / 'config' / 'config.yaml'} has no checkpoint yet: "
            f"{model} does not exist") in err
    assert "pass --checkpoint FILE" in err


def test_score_without_a_source_checkout_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_paths, "package_project", lambda: None)
    assert cli.main(["score", "photo.png"]) == 2
    err = capsys.readouterr().err
    assert (f"no --config given and the default config/config.yaml is not at {tmp_path / 'config/config.yaml'}"
            in err)
    assert "pass --config FILE" in err


def test_score_takes_the_checkpoint_from_the_configs_project(tmp_path, monkeypatch):
    """A project elsewhere (a Snakefile beside config/): its relative outdir is where the run is."""
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "Snakefile").write_text("")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["outdir"] = "runs/demo"
    (project / "config" / "mine.yaml").write_text(yaml.safe_dump(cfg))
    model = project / "runs" / "demo" / "train" / "ra_miqa_det_composite" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    seen = {}

    def fake_run(path, checkpoint, *rest):
        seen.update(path=path, checkpoint=checkpoint)

    from miqd.train import score_images

    monkeypatch.setattr(score_images, "run", fake_run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["score", "photo.png", "--config", "../project/config/mine.yaml", "--task", "det"]) == 0
    assert seen == {"path": "photo.png", "checkpoint": str(model)}


# ---------------------------------------------------------------------------------------------
# training: several GPUs run under torchrun


def test_several_gpus_relaunch_under_torchrun(monkeypatch):
    from miqd.train import launch

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    config = {"train": {"gpus": 2, "device": "cpu"}}
    launch.launch(config, "ra_miqa_cls_composite")
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "-m", "miqd.train.loop", json.dumps(config), "ra_miqa_cls_composite"]]
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd: 3)
    with pytest.raises(InputError, match=r"distributed training of r failed \(torchrun exit status 3\)"):
        launch.launch(config, "r")


# ---------------------------------------------------------------------------------------------
# overriding nested settings: a YAML file layered after the base config


def _demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_a_section_given_as_a_string_names_the_key_and_the_fix():
    config = _demo()
    config["infer"] = "{threads: 1}"
    with pytest.raises(ConfigError) as err:
        cfgmod.validate(config)
    message = str(err.value)
    assert message.startswith("invalid config: key infer: got the string '{threads: 1}', not a mapping of settings")
    assert "`snakemake --config infer=...`" in message and "replaces the whole infer section" in message
    assert ("put the override in a YAML file (e.g. override.yaml holding `infer: {threads: 1}`) and layer it "
            "after the base config: snakemake --configfile config/config.yaml override.yaml") in message


def test_a_nested_number_given_as_a_string_names_the_fix():
    """What Snakemake 9 makes of `--config infer='{threads: 1}'`: the section, with '1' for 1."""
    config = _demo()
    config["infer"]["threads"] = "1"
    with pytest.raises(ConfigError) as err:
        cfgmod.validate(copy.deepcopy(config))
    message = str(err.value)
    assert message.startswith("invalid config: key infer.threads: '1' is not of type 'integer'. infer.threads "
                              "is the string '1': `snakemake --config infer=...` passes nested values as strings")
    assert "holding `infer: {threads: 1}`" in message
    config["infer"]["threads"] = "many"  # not a number: the schema's message alone
    with pytest.raises(ConfigError) as err:
        cfgmod.validate(config)
    assert str(err.value) == "invalid config: key infer.threads: 'many' is not of type 'integer'"


def test_a_layered_override_file_changes_one_nested_key_and_keeps_the_rest(tmp_path):
    base = demo_config(tmp_path / "out")
    cfg = yaml.safe_load(base.read_text())
    cfg["infer"]["batch_size"] = 7  # a sibling the override must keep
    base.write_text(yaml.safe_dump(cfg))
    override = tmp_path / "override.yaml"
    override.write_text("infer: {threads: 1}\n")
    proc = snakemake("-n", "-p", "--cores", "4", "--configfile", str(base), str(override), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    infer = [line for line in lines if "miqd infer --config" in line]
    assert len(infer) == 4  # cls on 2 ImageNet shards, det and ins on 1 COCO shard
    assert all("--threads 1 " in line and '"batch_size":7' in line and '"device":"cpu"' in line
               for line in infer)
    distort = [line for line in lines if "miqd distort --config" in line]
    assert distort and all("--workers 2 " in line for line in distort)  # distort.threads is untouched
