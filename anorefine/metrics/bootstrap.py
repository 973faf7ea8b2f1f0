"""Paired bootstrap intervals of Δ = metric(refined) − metric(base) over the test images.

Design:

- The unit is the test image. A replicate draws the N images with replacement: a vector of image
  counts ``w`` (multinomial, ``numpy.random.default_rng(seed)``); the same draw scores both maps,
  so every Δ is paired. Pixels are never resampled: the pixels of one image share the image's
  content, defect and model errors, so they are far from independent and a pixel bootstrap would
  give much too narrow intervals.
- Each map is binned once: its pixels are sorted once (the engine's sort) and cut into at most
  ``bins`` score bins, then counted per bin for the normal pixels of every image and for every GT
  region (8-connected per image, as the engine labels them). When the map has at most ``bins``
  distinct values the bins are those values, and every replicate metric equals the exact metric of
  the resampled images. Otherwise the bins are cut, never inside a tie group, before the scores at
  ``bins / 2`` quantiles of all pixels and after those at ``bins / 2`` quantiles of the GT-region
  pixels (so a bin ends on a defect pixel and AP reads its precision there), and a replicate metric
  is the exact metric of the scores quantised to their bin. It approximates the metric of the raw
  scores, losing the order of the pixels inside a bin. Pooled quantiles alone put only the defect
  pixels' share of the bins (2 % of 4096) among the defect scores: on 156 smooth continuous maps of
  256² the binned AP was then 3e-3 too low; with the region quantiles it is 2e-4 too low, AUROC and
  AUPRO within 5e-6, and the paired Δ of AP within 1e-5 (the bias mostly cancels).
- A replicate's curves are matrix products of its image counts with the bin counts (cumulated from
  the highest bin down and summed per image): FP = ``w @ normal counts``, TP = ``w @ region pixel
  counts`` and the PRO numerator ``w @ region fractions`` (each region weighted by its image's
  count). Then, vectorised over the replicates in numpy float64: pixel AUROC (trapezoid over tie
  groups, = sklearn; a bilinear form ``w @ pairs @ w`` of the image counts), AP (sklearn's
  definition, a tie group is one threshold) and AUPRO (the engine's definition: the curve starts at
  (0, 0), trapezoid to FPR = limit with PRO interpolated there, divided by the limit). A curve point
  between two bins without positives of the view lies on a horizontal run and is dropped: exact, and
  far fewer columns for small views. Image AUROC/AP use the same curves with one bin per distinct
  image score.
- Views reuse the draw: a per-kind view zeroes the counts of the other kinds' images, a size-bin view
  restricts the regions (negatives stay all normal pixels), as in :mod:`anorefine.metrics.breakdown`.
- Percentile intervals of the replicate Δs (NaN replicates, e.g. a resample without positives,
  are ignored).
- Cost: the sort of each map (as ``compute_metrics``), then products of (replicates x images) by
  (images x bins) per view, in blocks of replicates with single-threaded BLAS. 156 maps of 256²,
  5 kinds (9 views), two maps, 1000 replicates: 2.2 s on one core of a 2-core Xeon, about what
  ``compute_metrics`` takes for the two maps there.

Across categories: for the interval of the mean Δ over categories, resample each category on its
own with its own stream, ``seed=category_seed(seed, category)``, average the replicate Δ arrays of
the categories replicate by replicate, and take :func:`interval` of the average (a stratified
bootstrap). The same ``seed`` for every category would reuse one stream of draws for all of them.

What it does not capture: resampling test images is not re-running training (another training seed,
another training set or a re-tuned refiner can move the metrics more than these intervals say), nor
a population of images other than the one the test images were drawn from. Images are exchangeable
here: the number of defective images and of each kind varies between replicates (no stratification).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from anorefine.errors import MetricError
from anorefine.metrics.breakdown import SIZE_BINS, kind_selections, size_bin_index
from anorefine.metrics.engine import check_aupro_limit
from anorefine.metrics.inputs import ArrayLike, prepare_labels, prepare_scores
from anorefine.metrics.names import AUPRO_LIMIT, SIZE_KEYS
from anorefine.metrics.ranking import sort_descending
from anorefine.metrics.regions import RegionNumbering

PIXEL_METRICS = SIZE_KEYS  # pixel_auroc, pixel_ap, aupro
IMAGE_METRICS = ("image_auroc", "image_ap")
_BLOCK = 64  # replicates per block: (64, bins) float64 temporaries stay in the CPU cache


@dataclass(frozen=True)
class RegionLayout:
    """Where each pixel belongs, from the masks: computed once and shared by every map binned on them.

    ``rows``: per (N,H,W) part, int32 of that shape: a normal pixel's image index (global over the
    parts), or ``num_images + r - 1`` for a pixel of GT region ``r`` (1..R, engine numbering).
    """

    rows: list[Tensor]
    num_images: int
    region_images: np.ndarray  # (R,) int64: each region's image index
    region_shares: np.ndarray  # (R,) float64: each region's area over its image's pixels

    @classmethod
    def from_masks(cls, masks: Sequence[Tensor]) -> RegionLayout:
        """Label (N,H,W) bool mask parts (sizes may differ between parts)."""
        num_images = sum(part.shape[0] for part in masks)
        numbering = RegionNumbering()
        rows, region_images, first_image = [], [], 0
        for part in masks:
            first_region = numbering.num_regions
            labels = numbering.label(part)
            image_ids = torch.arange(first_image, first_image + part.shape[0], dtype=torch.int32)
            is_region = labels > 0
            rows.append(
                torch.where(is_region, labels + (num_images - 1), image_ids.to(labels.device)[:, None, None])
            )
            positions = is_region.reshape(-1).nonzero().squeeze(1)
            images = torch.empty(
                numbering.num_regions - first_region, dtype=torch.int64, device=labels.device
            )
            images[labels.reshape(-1)[positions].long() - (first_region + 1)] = (
                positions // (part.shape[1] * part.shape[2]) + first_image
            )
            region_images.append(images.cpu())
            first_image += part.shape[0]
        return cls(
            rows,
            num_images,
            torch.cat([torch.zeros(0, dtype=torch.int64), *region_images]).numpy(),
            numbering.shares.numpy(),
        )

    @property
    def num_regions(self) -> int:
        """R."""
        return int(self.region_images.size)


@dataclass(frozen=True)
class BinnedMaps:
    """One map's pixel counts per score bin, cumulated from the highest bin (column 0) down.

    ``normal_above[i, k]``: normal pixels of image ``i`` in bins ``0..k``; ``region_above[r, k]``:
    pixels of region ``r`` in bins ``0..k`` (the last column is the region's size). ``exact``: the
    bins are the map's distinct values, so every replicate metric is exact.
    """

    normal_above: np.ndarray  # (N, K) float64
    region_above: np.ndarray  # (R, K) float64
    region_images: np.ndarray
    region_shares: np.ndarray
    exact: bool

    @property
    def num_images(self) -> int:
        """N."""
        return self.normal_above.shape[0]

    @property
    def num_regions(self) -> int:
        """R."""
        return self.region_above.shape[0]


def bin_maps(maps: Sequence[Tensor], layout: RegionLayout, bins: int = 4096) -> BinnedMaps:
    """Bin the (N,H,W) float map parts laid out as ``layout`` (see the module docstring): one sort
    and one pass over the sorted pixels."""
    if bins < 1:
        raise MetricError(f"bins must be at least 1, got {bins}")
    if [tuple(part.shape) for part in maps] != [tuple(part.shape) for part in layout.rows]:
        raise MetricError("the map parts do not have the shapes of the mask parts")
    group_keys, sorted_rows = sort_descending(maps, layout.rows)
    keys, rows = group_keys.cpu().numpy(), sorted_rows.cpu().numpy()
    changes = keys[1:] != keys[:-1]
    exact = int(np.count_nonzero(changes)) < bins
    if exact:
        starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
    else:  # cut before the tie group at each pooled quantile, after the one at each region-pixel quantile
        in_regions = np.flatnonzero(rows >= layout.num_images)
        half = bins // 2 if in_regions.size else 0
        pooled = np.arange(bins - half, dtype=np.int64) * keys.size // (bins - half)
        in_regions = in_regions[np.arange(half, dtype=np.int64) * in_regions.size // max(half, 1)]
        cuts = np.concatenate(
            [
                np.searchsorted(keys, keys[pooled], side="left"),
                np.searchsorted(keys, keys[in_regions], side="right"),
            ]
        )
        starts = np.unique(cuts[cuts < keys.size])
    del changes
    width = layout.num_images + layout.num_regions
    counts = np.empty((starts.size, width), dtype=np.float64)
    for index, (start, end) in enumerate(
        zip(starts.tolist(), [*starts[1:].tolist(), keys.size], strict=True)
    ):
        counts[index] = np.bincount(rows[start:end], minlength=width)
    above = np.cumsum(counts, axis=0).T
    return BinnedMaps(
        normal_above=np.ascontiguousarray(above[: layout.num_images]),
        region_above=np.ascontiguousarray(above[layout.num_images :]),
        region_images=layout.region_images,
        region_shares=layout.region_shares,
        exact=exact,
    )


def resample_counts(num_images: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, num_images) int64: how often each image is drawn when ``num_images`` images are
    drawn uniformly with replacement, per replicate (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=replicates)


def category_seed(seed: int, category: str) -> int:
    """The seed of one category's resample stream: ``seed`` (>= 0) combined with the CRC-32 of the
    category name, so categories get distinct, reproducible streams."""
    return seed * 2**32 + zlib.crc32(category.encode())


def _auroc(
    neg_weights: np.ndarray, neg_above: np.ndarray, pos_weights: np.ndarray, pos_above: np.ndarray
) -> np.ndarray:
    """AUROC (trapezoid over the thresholds) of every replicate, as a bilinear form of the weights.

    ``*_above``: (units, thresholds) cumulative negative / positive counts of each unit (image),
    highest threshold first; ``*_weights``: (replicates, units). Twice the area times P * N is
    ``sum_k dFP_k (TP_k + TP_{k-1})``, i.e. ``w_neg @ pairs @ w_pos`` with ``pairs`` unit by unit.
    """
    new_neg = np.diff(neg_above, axis=1, prepend=0.0)
    pos_twice = pos_above.copy()
    pos_twice[:, 1:] += pos_above[:, :-1]
    twice_auc = np.einsum("ri,ri->r", neg_weights @ (new_neg @ pos_twice.T), pos_weights)
    num_neg, num_pos = neg_weights @ neg_above[:, -1], pos_weights @ pos_above[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((num_pos > 0) & (num_neg > 0), twice_auc / (2.0 * num_pos * num_neg), np.nan)


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """AP (``sum_k (TP_k - TP_{k-1}) / P * TP_k / (TP_k + FP_k)``, sklearn's) of (replicates,
    thresholds) cumulative weighted counts, highest threshold first; NaN without positives."""
    precision = tp + fp
    np.maximum(precision, np.finfo(np.float64).tiny, out=precision)  # 0 / tiny = 0 above every pixel
    np.divide(tp, precision, out=precision)
    ap_sum = tp[:, 0] * precision[:, 0] + np.einsum("ij,ij->i", tp[:, 1:] - tp[:, :-1], precision[:, 1:])
    num_pos = tp[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(num_pos > 0, ap_sum / num_pos, np.nan)


def _aupro(
    fp: np.ndarray,
    num_neg: np.ndarray,
    overlap: np.ndarray,
    region_weight: np.ndarray,
    inside: np.ndarray,
    limit: float,
) -> np.ndarray:
    """AUPRO of every replicate from (replicates, thresholds) FP counts and summed region overlaps
    (PRO times ``region_weight``), both at least up to the first threshold past the limit, and the
    number of thresholds ``inside`` the limit: from (0, 0), trapezoid to FPR = ``limit`` with PRO
    interpolated there, divided by ``limit``.

    Computed in counts (``FP``, ``overlap``) and scaled once: FPR = FP / num_neg, PRO = overlap /
    region_weight; FP is clipped at ``limit * num_neg``, so segments past the limit have no width.
    """
    bound = limit * num_neg
    clipped = np.minimum(fp, bound[:, None])
    twice_area = clipped[:, 0] * overlap[:, 0] + np.einsum(
        "ij,ij->i", clipped[:, 1:] - clipped[:, :-1], overlap[:, 1:] + overlap[:, :-1]
    )
    # the segment that crosses the limit entered the sum with the overlap at its end: interpolate it
    rows = np.flatnonzero(inside < fp.shape[1])
    end = inside[rows]
    x0 = np.where(end > 0, fp[rows, end - 1], 0.0)
    y0, x1, y1 = np.where(end > 0, overlap[rows, end - 1], 0.0), fp[rows, end], overlap[rows, end]
    y_limit = y0 + (y1 - y0) * (bound[rows] - x0) / (x1 - x0)
    twice_area[rows] -= (y1 - y_limit) * (bound[rows] - x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        aupro = twice_area / (2.0 * limit * num_neg * region_weight)
    return np.where((num_neg > 0) & (region_weight > 0), aupro, np.nan)


def _check_counts(counts: np.ndarray, num_images: int) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != num_images:
        raise MetricError(f"counts must have shape (replicates, {num_images}), got {counts.shape}")
    return counts


def _single_threaded_blas() -> threadpool_limits:
    """The products here are small and many: BLAS threads add only synchronisation, and they stall
    badly (10x) when another process holds a core."""
    return threadpool_limits(limits=1, user_api="blas")


def _pixel_replicates(
    binned: BinnedMaps,
    counts: np.ndarray,
    aupro_limit: float,
    regions: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """:func:`replicate_metrics` on checked arguments."""
    counted: np.ndarray = np.asarray(counts.any(0))
    selected = np.arange(binned.num_regions) if regions is None else np.asarray(regions, dtype=np.int64)
    selected = selected[counted[binned.region_images[selected]]]
    if selected.size == 0:
        return {name: np.full(counts.shape[0], np.nan) for name in PIXEL_METRICS}
    region_above = binned.region_above[selected]
    negative_only = np.diff(region_above.sum(0), prepend=0.0) == 0
    keep = ~(negative_only & np.append(negative_only[1:], False))
    # units of the products: counted images (negatives) and images with a selected region (positives)
    images = np.flatnonzero(counted)
    with_regions, owner = np.unique(binned.region_images[selected], return_inverse=True)
    order = np.argsort(owner, kind="stable")
    firsts = np.flatnonzero(np.diff(owner[order], prepend=-1))
    kept = region_above[order][:, keep]
    negatives = binned.normal_above[np.ix_(images, keep)]
    positives = np.add.reduceat(kept, firsts, axis=0)
    fractions = np.add.reduceat(kept / kept[:, -1:], firsts, axis=0)
    region_counts = np.bincount(owner).astype(np.float64)
    weights = counts.astype(np.float64)
    neg_weights, pos_weights = weights[:, images], weights[:, with_regions]
    ap, aupro = np.empty(counts.shape[0]), np.empty(counts.shape[0])
    for start in range(0, counts.shape[0], _BLOCK):  # blocks of replicates: temporaries stay in cache
        block = slice(start, start + _BLOCK)
        fp = neg_weights[block] @ negatives
        ap[block] = _average_precision(pos_weights[block] @ positives, fp)
        # thresholds up to the limit (FP never decreases along a row), PRO up to the first one past it
        inside = np.array([np.searchsorted(row, aupro_limit * row[-1], side="right") for row in fp])
        columns = min(int(inside.max()) + 1, fp.shape[1])
        overlap = pos_weights[block] @ fractions[:, :columns]
        aupro[block] = _aupro(
            fp[:, :columns], fp[:, -1], overlap, pos_weights[block] @ region_counts, inside, aupro_limit
        )
    auroc = _auroc(neg_weights, negatives, pos_weights, positives)
    return {"pixel_auroc": auroc, "pixel_ap": ap, "aupro": aupro}


def replicate_metrics(
    binned: BinnedMaps,
    counts: np.ndarray,
    aupro_limit: float = AUPRO_LIMIT,
    regions: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``pixel_auroc``, ``pixel_ap``, ``aupro`` of every replicate, each (R,) float64, NaN where undefined.

    ``counts``: (R, N) image counts (:func:`resample_counts`); an image with count 0 drops out, so a
    per-kind view is the counts with the other images zeroed. ``regions``: indices of the regions
    that are positives (default all; e.g. a size bin); the other regions' pixels are left out and
    the negatives are all normal pixels of the counted images.
    """
    check_aupro_limit(aupro_limit)
    with _single_threaded_blas():
        return _pixel_replicates(binned, _check_counts(counts, binned.num_images), aupro_limit, regions)


def _image_replicates(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    _, group = np.unique(-scores, return_inverse=True)  # 0 = highest score
    above = (group.reshape(-1, 1) <= np.arange(group.max() + 1)).astype(np.float64)
    weights = counts.astype(np.float64)
    neg_weights, neg_above = weights[:, ~labels], above[~labels]
    pos_weights, pos_above = weights[:, labels], above[labels]
    return {
        "image_auroc": _auroc(neg_weights, neg_above, pos_weights, pos_above),
        "image_ap": _average_precision(pos_weights @ pos_above, neg_weights @ neg_above),
    }


def replicate_image_metrics(
    scores: np.ndarray, labels: np.ndarray, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """``image_auroc``, ``image_ap`` of every replicate: (N,) image scores and bool labels, images
    weighted by their counts (exact, one threshold per distinct score), each (R,), NaN where a class
    is missing."""
    scores = np.asarray(scores)
    with _single_threaded_blas():
        return _image_replicates(scores, np.asarray(labels, dtype=bool), _check_counts(counts, scores.size))


def _paired(
    base: BinnedMaps,
    refined: BinnedMaps,
    counts: np.ndarray,
    aupro_limit: float,
    regions: np.ndarray | None,
) -> dict[str, np.ndarray]:
    base_values = _pixel_replicates(base, counts, aupro_limit, regions)
    refined_values = _pixel_replicates(refined, counts, aupro_limit, regions)
    return {name: refined_values[name] - base_values[name] for name in PIXEL_METRICS}


def _check_paired(base: BinnedMaps, refined: BinnedMaps) -> None:
    if not np.array_equal(base.region_images, refined.region_images):
        raise MetricError("base and refined maps were binned on different masks")


def paired_deltas(
    base: BinnedMaps,
    refined: BinnedMaps,
    counts: np.ndarray,
    aupro_limit: float = AUPRO_LIMIT,
    regions: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Replicate Δ = refined − base of :func:`replicate_metrics` (same counts for both maps)."""
    check_aupro_limit(aupro_limit)
    _check_paired(base, refined)
    with _single_threaded_blas():
        return _paired(base, refined, _check_counts(counts, base.num_images), aupro_limit, regions)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise MetricError(f"level must be in (0, 1), got {level}")


def interval(deltas: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (numpy's
    linear interpolation) of the non-NaN replicates; ``(nan, nan)`` when there are none."""
    _check_level(level)
    deltas = np.asarray(deltas, dtype=np.float64)
    finite = deltas[~np.isnan(deltas)]
    if finite.size == 0:
        return np.nan, np.nan
    low, high = np.percentile(finite, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


@dataclass(frozen=True)
class DeltaInterval:
    """A bootstrap interval of Δ; ``replicates`` counts the non-NaN replicates it is taken from."""

    low: float
    high: float
    level: float
    replicates: int

    @classmethod
    def from_deltas(cls, deltas: np.ndarray, level: float = 0.95) -> DeltaInterval:
        """:func:`interval` of replicate Δs."""
        low, high = interval(deltas, level)
        return cls(low, high, level, int(np.count_nonzero(~np.isnan(deltas))))

    @property
    def contains_zero(self) -> bool:
        """``low <= 0 <= high`` (False for a NaN interval)."""
        return self.low <= 0.0 <= self.high

    def as_dict(self) -> dict[str, float | int | bool]:
        """JSON-ready record."""
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "replicates": self.replicates,
            "contains_zero": self.contains_zero,
        }


@dataclass(frozen=True)
class BootstrapSettings:
    """``eval.bootstrap`` for one category: ``seed`` is that category's stream (``category_seed``)."""

    replicates: int = 1000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class DeltaReplicates:
    """Replicate Δs (refined − base), each (R,) float64 with NaN where undefined, per view and metric.

    Views: ``"all"`` (every image), ``"kind/<kind>"`` (good images plus that kind's, as
    ``kind_selections``), ``"size/<bin key>"`` (the regions of one ``SIZE_BINS`` bin; bins without
    regions are absent). Pixel metrics everywhere; image metrics where the view has both classes.
    """

    views: dict[str, dict[str, np.ndarray]]
    level: float

    def intervals(self) -> dict[str, dict[str, DeltaInterval]]:
        """:class:`DeltaInterval` of every view and metric at ``level``."""
        return {
            view: {name: DeltaInterval.from_deltas(deltas, self.level) for name, deltas in metrics.items()}
            for view, metrics in self.views.items()
        }


def delta_intervals(
    base_maps: Sequence[Tensor],
    refined_maps: Sequence[Tensor],
    masks: Sequence[Tensor],
    base_scores: ArrayLike,
    refined_scores: ArrayLike,
    labels: ArrayLike,
    kinds: Sequence[str] | None = None,
    settings: BootstrapSettings = BootstrapSettings(),
    bins: int = 4096,
    aupro_limit: float = AUPRO_LIMIT,
) -> DeltaReplicates:
    """Paired bootstrap Δs of one evaluation set for every view (see :class:`DeltaReplicates`).

    ``base_maps``/``refined_maps``/``masks``: parts as for ``score_parts``, (N,H,W) float maps and
    bool masks; ``base_scores``/``refined_scores``/``labels``: (N,) image scores and labels (1 =
    anomalous); ``kinds``: one defect kind per image (``"good"`` for normal images) or ``None`` for
    no per-kind views; ``settings``: replicates, level and seed. Each map is binned once and the counts
    are drawn once, with the seed (give each category its own: :func:`category_seed`), and reused for
    every view. Extra memory: 4 bytes
    per pixel (the layout) plus one map's sort at a time (as ``pixel_metrics``), then the binned
    maps, (images + regions) x bins float64 each.
    Raises ``MetricError`` when the masks hold no GT region.
    """
    check_aupro_limit(aupro_limit)
    _check_level(settings.level)
    layout = RegionLayout.from_masks(masks)
    if layout.num_regions == 0:
        raise MetricError("pixel metrics are undefined: no ground-truth mask has an anomalous pixel")
    num_images = layout.num_images
    if kinds is not None and len(kinds) != num_images:
        raise MetricError(f"kinds has {len(kinds)} entries but there are {num_images} images")
    cpu = torch.device("cpu")
    scores = {
        "base": prepare_scores(base_scores, num_images, cpu).numpy(),
        "refined": prepare_scores(refined_scores, num_images, cpu).numpy(),
    }
    image_labels = prepare_labels(labels, num_images, cpu).numpy()
    base, refined = bin_maps(base_maps, layout, bins), bin_maps(refined_maps, layout, bins)
    del layout  # frees the per-pixel rows
    counts = resample_counts(num_images, settings.replicates, settings.seed)
    selections = {"all": np.ones(num_images, dtype=bool)}
    if kinds is not None:
        selections.update({f"kind/{kind}": selected for kind, selected in kind_selections(kinds).items()})
    views = {}
    with _single_threaded_blas():
        for view, selected in selections.items():
            view_counts = counts * selected
            deltas = _paired(base, refined, view_counts, aupro_limit, None)
            if 0 < image_labels[selected].sum() < selected.sum():
                base_images = _image_replicates(scores["base"], image_labels, view_counts)
                refined_images = _image_replicates(scores["refined"], image_labels, view_counts)
                deltas.update({name: refined_images[name] - base_images[name] for name in IMAGE_METRICS})
            views[view] = deltas
        bin_of_region = size_bin_index(base.region_shares)
        for index, size_bin in enumerate(SIZE_BINS):
            regions = np.flatnonzero(bin_of_region == index)
            if regions.size:
                views[f"size/{size_bin.key}"] = _paired(base, refined, counts, aupro_limit, regions)
    return DeltaReplicates(views, settings.level)
