"""Image and pixel anomaly-detection metrics on raw scores (definitions in each module's docstring)."""

from anorefine.metrics.accumulator import AnomalyMetrics
from anorefine.metrics.bootstrap import (
    BinnedMaps,
    DeltaInterval,
    DeltaReplicates,
    RegionLayout,
    bin_maps,
    category_seed,
    delta_intervals,
    interval,
    paired_deltas,
    replicate_image_metrics,
    replicate_metrics,
    resample_counts,
)
from anorefine.metrics.boundary import boundary_f1
from anorefine.metrics.breakdown import SIZE_BINS, SizeBin, kind_metrics, size_metrics
from anorefine.metrics.compute import METRIC_NAMES, compute_metrics, score_parts
from anorefine.metrics.engine import PixelMetrics, pixel_metrics
from anorefine.metrics.image import image_metrics
from anorefine.metrics.pro_compat import ProCompatCurve
from anorefine.metrics.regions import label_regions

__all__ = [
    "METRIC_NAMES",
    "SIZE_BINS",
    "AnomalyMetrics",
    "BinnedMaps",
    "DeltaInterval",
    "DeltaReplicates",
    "PixelMetrics",
    "ProCompatCurve",
    "RegionLayout",
    "SizeBin",
    "bin_maps",
    "boundary_f1",
    "category_seed",
    "compute_metrics",
    "delta_intervals",
    "image_metrics",
    "interval",
    "kind_metrics",
    "label_regions",
    "paired_deltas",
    "pixel_metrics",
    "replicate_image_metrics",
    "replicate_metrics",
    "resample_counts",
    "score_parts",
    "size_metrics",
]
