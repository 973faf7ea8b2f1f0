"""Image and pixel anomaly-detection metrics on raw scores (definitions in each module's docstring).

Importing this package stays light (no torch): ``anorefine.metrics.names`` is the vocabulary, and every
other name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Names imported on first use: name -> module.
_LAZY = {
    "AUPRO_LIMIT": "anorefine.metrics.names",
    "AnomalyMetrics": "anorefine.metrics.accumulator",
    "BinnedMaps": "anorefine.metrics.bootstrap",
    "BootstrapSettings": "anorefine.metrics.bootstrap",
    "DeltaInterval": "anorefine.metrics.bootstrap",
    "DeltaReplicates": "anorefine.metrics.bootstrap",
    "INTERVAL_KEYS": "anorefine.metrics.names",
    "METRIC_KEYS": "anorefine.metrics.names",
    "PixelMetrics": "anorefine.metrics.engine",
    "ProCompatCurve": "anorefine.metrics.pro_compat",
    "RegionLayout": "anorefine.metrics.bootstrap",
    "SIZE_BINS": "anorefine.metrics.breakdown",
    "SIZE_KEYS": "anorefine.metrics.names",
    "STAGES": "anorefine.metrics.names",
    "SegmentationScores": "anorefine.metrics.segmentation",
    "SizeBin": "anorefine.metrics.breakdown",
    "THRESHOLD_RULES": "anorefine.metrics.names",
    "THRESHOLD_SOURCES": "anorefine.metrics.names",
    "bin_maps": "anorefine.metrics.bootstrap",
    "boundary_f1": "anorefine.metrics.boundary",
    "category_seed": "anorefine.metrics.bootstrap",
    "choose_threshold": "anorefine.metrics.thresholds",
    "compute_metrics": "anorefine.metrics.compute",
    "delta_intervals": "anorefine.metrics.bootstrap",
    "image_metrics": "anorefine.metrics.image",
    "interval": "anorefine.metrics.bootstrap",
    "kind_metrics": "anorefine.metrics.breakdown",
    "label_regions": "anorefine.metrics.regions",
    "mebin_masks": "anorefine.metrics.thresholds",
    "mebin_search_range": "anorefine.metrics.thresholds",
    "paired_deltas": "anorefine.metrics.bootstrap",
    "pixel_metrics": "anorefine.metrics.engine",
    "replicate_image_metrics": "anorefine.metrics.bootstrap",
    "replicate_metrics": "anorefine.metrics.bootstrap",
    "resample_counts": "anorefine.metrics.bootstrap",
    "sample_scores": "anorefine.metrics.multiview",
    "score_parts": "anorefine.metrics.compute",
    "size_metrics": "anorefine.metrics.breakdown",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
