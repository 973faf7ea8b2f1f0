"""Tensor shape helpers typed for the checker (torch types ``shape[-2:]`` as a tuple of any length)."""

from __future__ import annotations

import torch


def spatial_size(tensor: torch.Tensor) -> tuple[int, int]:
    """The (height, width) of an image-like tensor (its last two dimensions)."""
    height, width = tensor.shape[-2:]
    return int(height), int(width)
