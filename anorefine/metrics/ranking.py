"""The shared core: one descending sort of scores, streamed tie group by tie group.

Every threshold metric is evaluated only at the boundaries between distinct score values (ties
collapsed), i.e. at thresholds ``t`` equal to each distinct score with the rule ``score >= t``.
Counts are exact integers and the curve sums float64. Keys are built and the sorted order is read
in chunks of ``CHUNK`` elements, so temporaries stay small whatever the number of pixels.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

CHUNK = 1 << 20  # elements per streamed chunk: float64 temporaries (8 MB) the allocator can reuse
_KEY_DTYPES = {torch.float32: (torch.int32, 0x7FFF_FFFF), torch.float64: (torch.int64, 0x7FFF_FFFF_FFFF_FFFF)}
_SCORE_DTYPES = {torch.int32: torch.float32, torch.int64: torch.float64}
_HIGH, _LOW = (1, 0) if sys.byteorder == "little" else (0, 1)  # int32 halves of an int64


def descending_keys(scores: Tensor) -> Tensor:
    """Integer keys whose ascending order is the descending order of ``scores`` (float32/float64).

    Keys are equal exactly when scores are equal (-0.0 and +0.0 included): nothing is merged.
    """
    int_dtype, magnitude = _KEY_DTYPES[scores.dtype]
    keys = (scores + 0.0).view(int_dtype)  # the copy we transform in place; + 0.0 maps -0.0 to +0.0
    sign = keys >> (keys.element_size() * 8 - 1)  # all ones for negative floats, else zero
    sign &= magnitude
    keys ^= sign  # negative floats: reverse the magnitude order, so keys ascend with the scores
    return keys.bitwise_not_()  # ascend -> descend


def key_to_score(key: Tensor) -> float:
    """Invert :func:`descending_keys` for one int32 or int64 key."""
    bits = ~key.reshape(1)
    bits ^= (bits >> (bits.element_size() * 8 - 1)) & _KEY_DTYPES[_SCORE_DTYPES[bits.dtype]][1]
    return float(bits.view(_SCORE_DTYPES[bits.dtype])[0])


def _flat_chunks(parts: Sequence[Tensor]) -> Iterator[tuple[int, Tensor]]:
    """``(global offset, chunk)`` over the flattened parts, chunks of at most ``CHUNK`` elements."""
    offset = 0
    for part in parts:
        flat = part.reshape(-1)
        for start in range(0, flat.numel(), CHUNK):
            yield offset + start, flat[start : start + CHUNK]
        offset += flat.numel()


def sort_descending(scores: Sequence[Tensor], payload: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Sort the scores of all ``scores`` parts descending, carrying an int32 payload (>= 0) per score.

    ``payload`` yields one tensor per part, of that part's shape, and is consumed part by part (it
    may be a generator that labels each part as it goes, so no full payload array is ever built).
    Returns ``(group_keys, sorted_payload)``: aligned 1-D tensors where ``group_keys`` is equal
    exactly within a tie group. float32 scores: the int32 key and the payload are packed into one
    int64 and only these values are sorted, without a permutation to build and gather through;
    on CPU numpy's in-place (SIMD) int64 sort does it several times faster than ``torch.sort``.
    float64 scores (any part float64): a stable ``torch.sort`` of int64 keys, then the payload is
    gathered (slower, and about twice the peak memory of the float32 path).
    """
    total = sum(part.numel() for part in scores)
    device = scores[0].device
    wide = any(part.dtype == torch.float64 for part in scores)
    payload_chunks = _flat_chunks(list(payload))
    if wide:
        keys = torch.empty(total, dtype=torch.int64, device=device)
        flat_payload = torch.empty(total, dtype=torch.int32, device=device)
        for start, chunk in _flat_chunks(scores):
            keys[start : start + chunk.numel()] = descending_keys(chunk.to(torch.float64))
            flat_payload[start : start + chunk.numel()] = next(payload_chunks)[1]
        del payload_chunks  # frees the last part's payload before the sort
        sorted_keys, order = torch.sort(keys, stable=True)
        del keys
        return sorted_keys, flat_payload[order]
    packed = torch.empty(total, dtype=torch.int64, device=device)
    halves = packed.view(torch.int32).view(-1, 2)
    for start, chunk in _flat_chunks(scores):
        halves[start : start + chunk.numel(), _HIGH] = descending_keys(chunk)
        halves[start : start + chunk.numel(), _LOW] = next(payload_chunks)[1]
    del payload_chunks
    if packed.device.type == "cpu":
        packed.numpy().sort()
    else:
        packed = torch.sort(packed).values
        halves = packed.view(torch.int32).view(-1, 2)
    return halves[:, _HIGH], halves[:, _LOW]


@dataclass(frozen=True)
class GroupChunk:
    """The tie groups that end inside one chunk of the sorted order, with their counts.

    ``tp``/``fp``: positives/negatives ranked at or above each group (float64, exact integers).
    """

    local_ends: Tensor  # int64 position in the chunk of the last element of each group ending here
    tp: Tensor
    fp: Tensor
    keys: Tensor  # the chunk's group keys (scores)
    payload: Tensor  # the chunk's sorted payload


def iter_groups(group_keys: Tensor, sorted_payload: Tensor) -> Iterator[GroupChunk]:
    """Stream the sorted order in chunks; positives are payload > 0."""
    positives_before = 0
    for start in range(0, group_keys.numel(), CHUNK):
        keys = group_keys[start : start + CHUNK]
        following = group_keys[start + 1 : start + CHUNK + 1]
        is_end = torch.ones(keys.numel(), dtype=torch.bool, device=keys.device)
        torch.ne(keys[: following.numel()], following, out=is_end[: following.numel()])
        local_ends = is_end.nonzero().squeeze(1)
        payload = sorted_payload[start : start + CHUNK]
        positives = torch.cumsum(payload > 0, 0)
        tp = positives[local_ends].to(torch.float64) + positives_before
        fp = (local_ends + (start + 1)).to(torch.float64) - tp
        yield GroupChunk(local_ends, tp, fp, keys, payload)
        positives_before += int(positives[-1])


class RankingCurves:
    """AUROC, AP, F1-max and IoU-max accumulated over the streamed tie groups (float64 sums).

    AUROC: trapezoid over the ROC points (= sklearn ``roc_auc_score``). AP:
    ``sum_g (R_g - R_{g-1}) * P_g`` (= sklearn ``average_precision_score``). F1 = 2TP / (TP + FP + P)
    maximised over the groups; the F1 threshold is the highest score reaching the maximum.
    IoU = F1 / (2 - F1) at every threshold, an increasing function of F1, so IoU-max follows from F1-max.
    """

    def __init__(self, num_pos: int, num_neg: int) -> None:
        self.num_pos, self.num_neg = num_pos, num_neg
        self.twice_auc, self.ap_sum, self.best_f1 = 0.0, 0.0, -1.0
        self.best_key: Tensor | None = None
        self.last_tp, self.last_fp = 0.0, 0.0

    def update(self, chunk: GroupChunk) -> None:
        """Add the groups of one chunk."""
        if chunk.local_ends.numel() == 0 or self.num_pos == 0:
            return
        tp, fp = chunk.tp, chunk.fp
        new_tp = torch.diff(tp, prepend=tp.new_tensor([self.last_tp]))
        new_fp = torch.diff(fp, prepend=fp.new_tensor([self.last_fp]))
        # sum new_fp * (tp + previous tp), previous tp = tp - new_tp
        self.twice_auc += float(2.0 * torch.dot(new_fp, tp) - torch.dot(new_fp, new_tp))
        self.ap_sum += float(torch.dot(new_tp, tp / (tp + fp)))
        best = int((tp / (tp + fp + self.num_pos)).argmax())
        f1 = 2.0 * float(tp[best]) / (float(tp[best] + fp[best]) + self.num_pos)
        if f1 > self.best_f1:
            self.best_f1, self.best_key = f1, chunk.keys[chunk.local_ends[best]].clone()
        self.last_tp, self.last_fp = float(tp[-1]), float(fp[-1])

    @property
    def auroc(self) -> float | None:
        """``None`` unless both classes are present."""
        if self.num_pos == 0 or self.num_neg == 0:
            return None
        return self.twice_auc / (2 * self.num_pos * self.num_neg)

    @property
    def average_precision(self) -> float | None:
        """``None`` without positives."""
        return self.ap_sum / self.num_pos if self.num_pos else None

    @property
    def f1_max(self) -> float | None:
        """``None`` without positives."""
        return self.best_f1 if self.num_pos else None

    @property
    def f1_threshold(self) -> float | None:
        """The score at which F1 is maximal (predict ``score >= threshold``)."""
        return None if self.best_key is None else key_to_score(self.best_key)

    @property
    def iou_max(self) -> float | None:
        """``None`` without positives."""
        return self.best_f1 / (2.0 - self.best_f1) if self.num_pos else None


def ranking_curves(scores: Tensor, payload: Tensor) -> RankingCurves:
    """Sort once and accumulate :class:`RankingCurves` of 1-D scores and int32 payload (> 0 positive)."""
    num_pos = int((payload > 0).sum())
    curves = RankingCurves(num_pos, payload.numel() - num_pos)
    for chunk in iter_groups(*sort_descending([scores], [payload])):
        curves.update(chunk)
    return curves
