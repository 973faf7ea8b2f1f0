"""Fetch every checkpoint the model configs name into the weights dir (needs internet).

Used by ``python scripts/download.py weights [--dir DIR]``. CLIP checkpoints go through open_clip's
own pretrained download, CNN backbones through timm's; each state dict is written where the
detectors look for it (``open_clip/<model>-<pretrained>.pt``, ``timm/<backbone>...safetensors``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import open_clip
import timm

from anorefine.detectors.backbones import WEIGHT_FILES, weight_file_names
from anorefine.detectors.clip_models import TINY, checkpoint_name, torch_save_atomic
from anorefine.settings import effective_settings


def configured_clips(conf_dir: Path) -> list[tuple[str, str]]:
    """The (model, pretrained tag) pairs named by ``clip``/``pretrained`` in the model configs."""
    pairs = set()
    for path in sorted(conf_dir.glob("*.yaml")):
        node = effective_settings(path)
        clip, pretrained = node.get("clip"), node.get("pretrained")
        if isinstance(clip, str) and clip != TINY and isinstance(pretrained, str):
            pairs.add((clip, pretrained))
    return sorted(pairs)


def download_clip_weights(weights_dir: str | Path, models: list[tuple[str, str]]) -> list[Path]:
    """Write each CLIP checkpoint missing from ``weights_dir``; returns the paths of all of them."""
    paths = []
    for model, pretrained in models:
        target = Path(weights_dir) / checkpoint_name(model, pretrained)
        if not target.is_file():
            print(f"downloading {model} ({pretrained}) -> {target}")
            with tempfile.TemporaryDirectory() as cache:
                clip = open_clip.create_model(model, pretrained=pretrained, cache_dir=cache)
                torch_save_atomic(clip.state_dict(), target)
        paths.append(target)
    return paths


def download_backbone_weights(weights_dir: str | Path, backbones: list[str] | None = None) -> list[Path]:
    """Write the ImageNet weights of each timm backbone (default: those the configs name) into the weights
    dir (timm download)."""
    from safetensors.torch import save_file

    paths = []
    for backbone in backbones or sorted(WEIGHT_FILES):
        target = Path(weights_dir) / weight_file_names(backbone)[0]
        if not target.is_file():
            print(f"downloading {backbone} (timm, ImageNet) -> {target}")
            state = timm.create_model(backbone, pretrained=True).state_dict()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            save_file({key: value.contiguous() for key, value in state.items()}, str(partial))
            partial.replace(target)
        paths.append(target)
    return paths
