"""Label-free thresholds: set on normal images only, or per image by MEBin (docs/thresholds.md).

A pixel (or an image) is anomalous when its value is strictly **above** the threshold, as in predict
mode's masks: the quantile 1.0 (the largest normal value) then marks no normal value.

Global rules, one threshold for every test image of a category, from values of normal images only
(pooled pixel values of their maps, or their image scores):

- ``quantile``: the ``quantile``-quantile of the pooled values (numpy's default linear interpolation);
- ``mean_std``: mean + ``k`` · σ of the pooled values (population σ). With ``k = 3`` on the
  ``validation`` images it is the baseline that MVTec AD 2's upload checker suggests for the
  thresholded anomaly images.

MEBin ("main element binarization", AnomalyNCD, Huang et al., CVPR 2025, arXiv 2410.14379; as the
authors' code HUST-SLOW/AnomalyNCD ``models/modules/_MEBin.py`` does it) sets one threshold per map of a
set of maps (the test maps of a category, no labels):

1. Search range: ``low`` / ``high`` = the lowest / highest image peak (map maximum) of the set.
2. Thresholds swept from high to low: ``low + s · (high − low) / 255`` for ``s = 255, 255 −
   sample_rate, …`` while ``s > 0`` (the reference maps ``[low, high]`` onto ``[0, 255]`` and compares
   there, which marks the same pixels).
3. At each threshold: binarise (``map > t``), erode with a ``kernel_size`` × ``kernel_size`` square
   (``erode``; the border does not erode, as OpenCV's default) and count 8-connected components.
4. Stable intervals: runs of equal, non-zero counts at least ``min_interval_len`` thresholds long. The
   count whose longest run is longest wins (ties: the count met first, at the higher thresholds);
   among its runs the longest (ties: the later, lower one); its last (lowest) threshold is the map's.
5. The mask is the eroded binarisation at that threshold; no stable interval: an empty mask.

Where ours differs, on purpose: the reference reads 8-bit PNG maps and truncates the mapped-back
threshold to an integer; we keep float maps and the exact threshold. When every peak of the set is
equal (one image, say) the reference divides by zero and returns empty masks; we take the set's lowest
value as ``low`` instead (as anomalib's MEBin does). Step 3 is computed as a grey erosion (minimum
filter) once per map, thresholded at each level: eroding a binarisation with a flat square is the
same as binarising the minimum-filtered map. anomalib 2.7's ``mebin_binarize`` is not used: its
iterative kornia connected components took ~27 s per 128 × 128 map on one CPU core, it sets the range
from whatever batch it is given, and it does not erode the final mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from anorefine.errors import AnorefineError, MetricError

#: The rules ``choose_threshold`` sets one threshold with (``mebin`` is per image: ``mebin_masks``).
GLOBAL_RULES = ("quantile", "mean_std")
#: 8-connectivity, as the reference's ``cv2.connectedComponentsWithStats(..., connectivity=8)``.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: MEBin compares on a 0..255 scale (the reference's 8-bit maps); its sweep steps through it.
_MEBIN_SCALE = 255

Values = np.ndarray | Sequence[np.ndarray]


def check_params(quantile: float, k: float, prefix: str = "") -> None:
    """``quantile`` in [0, 1] and ``k`` finite and not negative; ``prefix`` names the config node."""
    if not 0.0 <= quantile <= 1.0:
        raise AnorefineError(
            f"{prefix}quantile={quantile} must lie in [0, 1] (1.0: the largest normal value)"
        )
    if not (math.isfinite(k) and k >= 0.0):
        raise AnorefineError(f"{prefix}k={k} must be a number, 0 or more (the threshold is mean + k·σ)")


def _pooled(values: Values) -> list[np.ndarray]:
    """The flattened parts of ``values`` (one array, or a sequence of arrays of any shapes), checked
    to be non-empty and finite."""
    parts = [np.asarray(values).ravel()] if isinstance(values, np.ndarray) else [np.ravel(v) for v in values]
    if sum(part.size for part in parts) == 0:
        raise MetricError("no normal values to set a threshold on: give the maps or scores of normal images")
    if not all(np.isfinite(part).all() for part in parts):
        raise MetricError("the normal values contain NaN or infinity: a threshold needs finite values")
    return parts


def choose_threshold(rule: str, normal_values: Values, *, quantile: float = 0.99, k: float = 3.0) -> float:
    """The ``rule``'s threshold (``quantile`` or ``mean_std``, module docstring) of the values of normal
    images: one array or a sequence of arrays (e.g. maps of different sizes), pooled."""
    if rule not in GLOBAL_RULES:
        raise AnorefineError(
            f"rule={rule!r} sets no global threshold: use one of {', '.join(GLOBAL_RULES)} "
            "(mebin is per image: mebin_masks)"
        )
    check_params(quantile, k)
    parts = _pooled(normal_values)
    if rule == "quantile":
        return float(np.quantile(parts[0] if len(parts) == 1 else np.concatenate(parts), quantile))
    count = sum(part.size for part in parts)
    mean = sum(float(part.sum(dtype=np.float64)) for part in parts) / count
    variance = (
        sum(float(np.square(np.subtract(part, mean, dtype=np.float64)).sum()) for part in parts) / count
    )
    return mean + k * math.sqrt(variance)


def mebin_search_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """MEBin's (low, high): the lowest and highest map peak of the set; if they are equal, the set's
    lowest value and that peak (module docstring)."""
    if not maps:
        raise MetricError("MEBin needs at least one anomaly map")
    peaks = [float(np.max(m)) for m in maps]
    low, high = min(peaks), max(peaks)
    return (min(float(np.min(m)) for m in maps) if low == high else low), high


def stable_interval(counts: Sequence[int], min_interval_len: int) -> tuple[int, int] | None:
    """(index of the last threshold, component count) of MEBin's chosen stable interval of ``counts``
    (one per threshold, highest threshold first); ``None`` if there is none (step 4)."""
    runs: dict[int, list[tuple[int, int]]] = {}  # count -> its runs (start, end), in sweep order
    start = 0
    while start < len(counts):
        end = start
        while end + 1 < len(counts) and counts[end + 1] == counts[start]:
            end += 1
        if counts[start] != 0 and end - start + 1 >= min_interval_len:
            runs.setdefault(counts[start], []).append((start, end))
        start = end + 1
    if not runs:
        return None
    longest = {count: max(end - start for start, end in spans) for count, spans in runs.items()}
    count = max(longest, key=longest.__getitem__)  # first inserted among equals
    end = max(reversed(runs[count]), key=lambda span: span[1] - span[0])[1]  # last among equals
    return end, count


def _eroded(anomaly_map: np.ndarray, erode: bool, kernel_size: int) -> np.ndarray:
    values = np.asarray(anomaly_map)
    if values.ndim != 2:
        raise MetricError(f"MEBin takes 2-D anomaly maps (H, W), got shape {values.shape}")
    if not erode:
        return values
    return ndimage.minimum_filter(values, size=kernel_size, mode="constant", cval=np.inf)


def _plateau_threshold(
    eroded: np.ndarray, low: float, high: float, sample_rate: int, min_interval_len: int
) -> tuple[float, int]:
    levels = low + (high - low) / _MEBIN_SCALE * np.arange(_MEBIN_SCALE, 0, -sample_rate, dtype=np.float64)
    counts = [int(ndimage.label(eroded > level, structure=_EIGHT_CONNECTED)[1]) for level in levels]
    chosen = stable_interval(counts, min_interval_len)
    return (math.inf, 0) if chosen is None else (float(levels[chosen[0]]), chosen[1])


def check_mebin(sample_rate: int, min_interval_len: int, kernel_size: int, prefix: str = "MEBin ") -> None:
    """MEBin's integer settings are 1 or more; ``prefix`` names the config node."""
    for name, value in (("sample_rate", sample_rate), ("min_interval_len", min_interval_len),
                        ("kernel_size", kernel_size)):  # fmt: skip
        if value < 1:
            raise AnorefineError(f"{prefix}{name}={value} must be 1 or more")


def mebin_threshold(
    anomaly_map: np.ndarray,
    low: float,
    high: float,
    *,
    sample_rate: int = 4,
    min_interval_len: int = 4,
    erode: bool = True,
    kernel_size: int = 6,
) -> tuple[float, int]:
    """(threshold, component count of its stable interval) of one map within the set's search range
    (``mebin_search_range``); (inf, 0) when no interval is stable."""
    check_mebin(sample_rate, min_interval_len, kernel_size)
    return _plateau_threshold(
        _eroded(anomaly_map, erode, kernel_size), low, high, sample_rate, min_interval_len
    )


def mebin_masks(
    maps: Sequence[np.ndarray],
    *,
    search_range: tuple[float, float] | None = None,
    sample_rate: int = 4,
    min_interval_len: int = 4,
    erode: bool = True,
    kernel_size: int = 6,
) -> list[np.ndarray]:
    """MEBin's bool mask of every (H, W) map of a set (module docstring; the defaults are the paper's).

    ``search_range`` (low, high) defaults to ``mebin_search_range(maps)``; give the range of the whole
    set (e.g. the peaks of all test maps of a category) to binarise it batch by batch.
    """
    check_mebin(sample_rate, min_interval_len, kernel_size)
    low, high = mebin_search_range(maps) if search_range is None else search_range
    masks = []
    for anomaly_map in maps:
        eroded = _eroded(anomaly_map, erode, kernel_size)
        threshold, _ = _plateau_threshold(eroded, low, high, sample_rate, min_interval_len)
        masks.append(eroded > threshold)
    return masks
