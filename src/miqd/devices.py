"""Where a stage computes: one rule for every stage that can use a GPU."""

from __future__ import annotations

from miqd.errors import InputError


def resolve_device(device: str, key: str) -> str:
    """`auto` = CUDA when this machine has it, else the CPU; asking for CUDA where there is none is an
    error naming the config key (`key`), not a silent fall back to the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{key} is {device!r} but this machine has no CUDA device; use auto or cpu")
    return device


def autocast(device: str, precision: str):
    """Mixed precision on CUDA (bf16 or fp16) as configured; the CPU always computes in fp32."""
    import contextlib

    import torch

    if device.startswith("cuda") and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()
