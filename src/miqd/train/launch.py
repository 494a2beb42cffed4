"""Starting one training run: in this process, or one process per GPU under torchrun.

`miqd train` (and so the train rule) calls `launch`; a run with train.gpus > 1 on a CUDA config is
relaunched as `python -m torch.distributed.run ... -m miqd.train.loop CONFIG_JSON RUN`, whose
processes find themselves by WORLD_SIZE and train with DistributedDataParallel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from miqd.errors import InputError


def check_gpus(config: dict) -> int:
    """train.gpus, after checking that this job sees that many CUDA devices."""
    gpus = config["train"]["gpus"]
    if gpus > 1 and config["train"]["device"] != "cpu":
        import torch

        if torch.cuda.device_count() < gpus:
            raise InputError(f"train.gpus is {gpus} but this job sees {torch.cuda.device_count()} CUDA device(s); "
                             f"ask the scheduler for {gpus} GPUs (the train rule's gpu resource) or lower train.gpus")
    return gpus


def torchrun_command(config: dict, run: str, gpus: int) -> list[str]:
    """One training process per GPU under torchrun (DistributedDataParallel), on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "miqd.train.loop", json.dumps(config), run]


def launch(config: dict, run: str) -> None:
    """Train `run` of a validated config: under torchrun when it asks for several GPUs and this
    process is not already one of torchrun's, else here."""
    gpus = check_gpus(config)
    if gpus > 1 and "WORLD_SIZE" not in os.environ:
        code = subprocess.call(torchrun_command(config, run, gpus))
        if code:
            raise InputError(f"distributed training of {run} failed (torchrun exit status {code}); "
                             f"see the log above")
        return
    from miqd.train import loop

    loop.train(config, run)
