"""Validation and conversion of metric inputs (numpy arrays or torch tensors) to torch tensors.

Scores keep their precision: float32 and float64 stay as they are, narrower floats widen to float32
and integer scores to float64, so no two distinct values are ever merged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from anorefine.errors import MetricError

ArrayLike = np.ndarray | Tensor


def as_tensor(value: ArrayLike, name: str, device: torch.device | None = None) -> Tensor:
    """Return ``value`` as a detached tensor (numpy arrays are shared, not copied, where possible)."""
    if isinstance(value, Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise MetricError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    return tensor if device is None else tensor.to(device)


def _exact_float(tensor: Tensor, name: str) -> Tensor:
    """Scores as float32/float64 without merging distinct values; NaN is rejected."""
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise MetricError(f"{name} must hold real scores, got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    elif tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if bool(torch.isnan(tensor).any()):
        raise MetricError(f"{name} contains NaN; replace NaN scores before computing metrics")
    return tensor


def _squeeze_channel(tensor: Tensor, name: str) -> Tensor:
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.ndim != 3:
        raise MetricError(f"{name} must have shape (N,H,W) or (N,1,H,W), got {tuple(tensor.shape)}")
    return tensor


def prepare_maps(anomaly_maps: ArrayLike) -> Tensor:
    """Anomaly maps as a contiguous (N,H,W) float32/float64 tensor on their own device."""
    maps = _exact_float(
        _squeeze_channel(as_tensor(anomaly_maps, "anomaly_maps"), "anomaly_maps"), "anomaly_maps"
    )
    if maps.numel() == 0:
        raise MetricError("anomaly_maps is empty")
    return maps.contiguous()


def to_binary(values: Tensor, name: str) -> Tensor:
    """Bool tensor from bool, {0,1} or {0,255} values; anything else raises ``MetricError``."""
    if values.dtype == torch.bool:
        return values
    positive = values != 0
    if bool(positive.any()):
        top = values.max()
        if float(top) not in (1.0, 255.0) or not bool((values == top).eq(positive).all()):
            raise MetricError(f"{name} must be binary: bool, {{0,1}} or {{0,255}} values")
    return positive


def prepare_binary(values: ArrayLike, name: str) -> Tensor:
    """Binary maps (bool, {0,1} or {0,255}) as a contiguous (N,H,W) bool tensor on their own device."""
    return to_binary(_squeeze_channel(as_tensor(values, name), name), name).contiguous()


def prepare_masks(gt_masks: ArrayLike, shape: torch.Size, device: torch.device) -> Tensor:
    """Ground-truth masks as a contiguous (N,H,W) bool tensor of the maps' shape, on ``device``."""
    masks = _squeeze_channel(as_tensor(gt_masks, "gt_masks", device), "gt_masks")
    if masks.shape != shape:
        raise MetricError(f"gt_masks shape {tuple(masks.shape)} does not match anomaly_maps {tuple(shape)}")
    return to_binary(masks, "gt_masks").contiguous()


def prepare_vector(values: ArrayLike, length: int, name: str, device: torch.device) -> Tensor:
    """A per-image vector of ``length`` entries, flattened, on ``device``."""
    vector = as_tensor(values, name, device).reshape(-1)
    if vector.numel() != length:
        raise MetricError(f"{name} has {vector.numel()} entries but there are {length} images")
    return vector


def prepare_scores(image_scores: ArrayLike, length: int, device: torch.device) -> Tensor:
    """Image scores as a float32/float64 vector."""
    return _exact_float(prepare_vector(image_scores, length, "image_scores", device), "image_scores")


def prepare_labels(labels: ArrayLike, length: int, device: torch.device) -> Tensor:
    """Image labels (1 = anomalous) as a bool vector; an unlabeled image (-1) is refused, never taken
    for a normal one."""
    vector = prepare_vector(labels, length, "labels", device)
    if vector.dtype != torch.bool and bool((vector < 0).any()):
        raise MetricError(
            f"labels hold {int((vector < 0).sum())} unlabeled images (-1, e.g. MVTec AD 2's test_private): "
            "metrics need labeled images"
        )
    return to_binary(vector, "labels")
