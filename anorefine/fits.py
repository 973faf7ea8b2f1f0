"""Fitted detector state: saved weights-only and shared by every run that would fit the same way.

What a fit changes (PatchCore's memory bank, PaDiM's Gaussians, CFLOW's decoders) is the difference
between the detector's state dict before and after ``fit``; only that part is saved (the pretrained
backbone comes from its weights file anyway), with ``torch.save`` of tensors only. The cache key
hashes everything the fit depends on: the resolved model config, the training images (paths, sizes,
modification times), the input size, the seed, the code's commit and the torch version; a run whose
key matches loads the state instead of fitting, which gives the same detector bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from anorefine.atomic import write_atomic
from anorefine.data import AnomalyImageDataset
from anorefine.detectors.base import Detector
from anorefine.results import git_commit


def fit_key(model: dict[str, Any], train_set: AnomalyImageDataset, seed: int) -> str:
    """Hash of what a detector's fit depends on (see the module docstring)."""
    images = []
    for record in train_set.records:
        stat = record.image_path.stat()
        images.append([str(record.image_path.resolve()), stat.st_size, stat.st_mtime_ns])
    blob = {
        "model": model,
        "images": images,
        "image_size": train_set.image_size,
        "seed": seed,
        "commit": git_commit(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def snapshot(detector: Detector) -> dict[str, torch.Tensor]:
    """A copy of the detector's state before fitting (what ``fitted_state`` compares against)."""
    return {key: value.detach().clone() for key, value in detector.state_dict().items()}


def fitted_state(detector: Detector, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of the detector's state dict that its fit added or changed."""
    changed = {}
    for key, value in detector.state_dict().items():
        old = before.get(key)
        if old is None or old.shape != value.shape or not torch.equal(old, value):
            changed[key] = value.detach().cpu()
    return changed


def save_fit(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write a fitted state atomically (a temporary file renamed into place)."""
    write_atomic(path, lambda temp: torch.save(state, temp))


def load_fit(detector: Detector, path: Path) -> None:
    """Load a state written by ``save_fit`` into a freshly built detector of the same config."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    device = next((t.device for t in detector.state_dict().values()), torch.device("cpu"))
    result = detector.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False, assign=True)
    if result.unexpected_keys:
        raise RuntimeError(f"{path} does not fit this detector: unexpected {result.unexpected_keys[:3]}")
