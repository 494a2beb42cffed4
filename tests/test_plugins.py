"""The one registry every pluggable kind uses: one rule for a repeated name, one message for an unknown one."""

from __future__ import annotations

import pytest

from miqd.errors import InputError
from miqd.plugins import Registry


def test_a_name_registered_twice_is_an_error_and_the_first_stays():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.add("a", 2)
    assert reg.get("a") == 1


def test_an_unknown_name_lists_the_known_ones_in_registration_order():
    reg: Registry[str] = Registry("widget")

    @reg.register("zeta")
    def zeta():
        return "z"

    reg.add("alpha", "a")
    assert reg.names() == ["zeta", "alpha"] and "alpha" in reg and len(reg) == 2
    assert reg.get("zeta") is zeta
    with pytest.raises(InputError, match=r"^cfg\.key: unknown widget 'beta'; known: zeta, alpha$"):
        reg.get("beta", "cfg.key")


def test_every_pluggable_kind_is_such_a_registry():
    from miqd.distort.corruptions import CORRUPTIONS, available_corruptions
    from miqd.models.backends import BACKENDS
    from miqd.models.weights import KEY_MAPS
    from miqd.nriqa import METRICS
    from miqd.roi.stage import METHODS as ROI_METHODS
    from miqd.select import METHODS
    from miqd.train.losses import LOSSES
    from miqd.train.networks import MODELS

    kinds = {"corruption": CORRUPTIONS, "backend": BACKENDS, "key map": KEY_MAPS, "NR-IQA metric": METRICS,
             "selection method": METHODS, "ROI method": ROI_METHODS, "loss": LOSSES, "quality model": MODELS}
    for kind, reg in kinds.items():
        assert isinstance(reg, Registry) and reg.kind == kind and len(reg) > 0, kind
    assert available_corruptions() == CORRUPTIONS.names()
    assert {"timm", "torchvision", "ultralytics", "mmdet"} == set(BACKENDS)
    assert "ra_miqa" in MODELS and "top_k" in METHODS
