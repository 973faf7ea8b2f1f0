"""The multi-view sample-level score (Real-IAD): one score and one label per physical sample.

Real-IAD photographs each sample from five cameras; a sample-level evaluation scores a sample by
reducing its views' image scores (by default their maximum; or their mean) and calls a sample
anomalous when any of its views is. ``sample_scores`` is that reduction on plain vectors (the views'
``ImageRecord.sample_id`` give the grouping); image AUROC/AP over its output is the sample-level metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from anorefine.errors import MetricError
from anorefine.metrics.inputs import ArrayLike, prepare_labels, prepare_scores

#: How a sample's view scores become its score.
SampleReduce = Literal["max", "mean"]
_REDUCTIONS = {"max": "amax", "mean": "mean"}


def sample_scores(
    sample_ids: Sequence[str | None],
    image_scores: ArrayLike,
    labels: ArrayLike,
    reduce: SampleReduce = "max",
) -> tuple[list[str], Tensor, Tensor]:
    """Per-sample (ids, scores, labels) from per-view ones: the samples in order of first appearance,
    each one's score its views' ``reduce`` and its label True when any view is anomalous."""
    if reduce not in _REDUCTIONS:
        raise MetricError(f"reduce={reduce!r}: use one of {', '.join(_REDUCTIONS)}")
    if any(sample is None for sample in sample_ids):
        raise MetricError("sample_ids hold None: a sample-level score needs every view's sample (Real-IAD)")
    cpu = torch.device("cpu")
    scores = prepare_scores(image_scores, len(sample_ids), cpu)
    views_anomalous = prepare_labels(labels, len(sample_ids), cpu)
    ids = [str(sample) for sample in dict.fromkeys(sample_ids)]
    position = {sample: index for index, sample in enumerate(ids)}
    index = torch.tensor([position[str(sample)] for sample in sample_ids], dtype=torch.long)
    reduced = torch.zeros(len(ids), dtype=scores.dtype).scatter_reduce(
        0, index, scores, _REDUCTIONS[reduce], include_self=False
    )
    anomalous = torch.zeros(len(ids), dtype=torch.bool).scatter_reduce(
        0, index, views_anomalous, "amax", include_self=False
    )
    return ids, reduced, anomalous
