"""Image and pixel anomaly-detection metrics on raw scores (definitions in each module's docstring)."""

from anorefine.metrics.accumulator import AnomalyMetrics
from anorefine.metrics.boundary import boundary_f1
from anorefine.metrics.compute import METRIC_NAMES, compute_metrics, score_parts
from anorefine.metrics.engine import PixelMetrics, pixel_metrics
from anorefine.metrics.image import image_metrics
from anorefine.metrics.pro_compat import ProCompatCurve
from anorefine.metrics.regions import label_regions

__all__ = [
    "METRIC_NAMES",
    "AnomalyMetrics",
    "PixelMetrics",
    "ProCompatCurve",
    "boundary_f1",
    "compute_metrics",
    "image_metrics",
    "label_regions",
    "pixel_metrics",
    "score_parts",
]
