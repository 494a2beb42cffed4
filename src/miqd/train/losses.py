"""Training losses (a registry): MSE, the paper's; PLCC and norm-in-norm from the IQA literature.

Batch-level correlation losses need at least two distinct labels in a batch; with fewer their
value is 0 (no signal), never NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from miqd.plugins import Registry

LOSSES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("loss")
register_loss = LOSSES.register


def get_loss(name: str):
    return LOSSES.get(name)


@register_loss("mse")
def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred.float() - target.float()) ** 2)


def _centred_unit(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    x = x.float() - x.float().mean()
    return x / (x.norm() + eps)


@register_loss("plcc")
def plcc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1 - Pearson r) / 2 over the batch: scale- and shift-free, in [0, 1]."""
    return (1.0 - torch.sum(_centred_unit(pred) * _centred_unit(target))) / 2.0


@register_loss("norm_in_norm")
def norm_in_norm(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Li et al., Norm-in-Norm loss (ACM MM 2020), q = 2, p = 1: predictions and labels centred
    and scaled to unit L2 norm, then the L1 distance, divided by its bound 2·sqrt(n) so that it
    lies in [0, 1] whatever the batch size."""
    n = pred.numel()
    return torch.sum(torch.abs(_centred_unit(pred) - _centred_unit(target))) / (2.0 * n**0.5)
