"""The metrics' vocabulary, defined once: the maps a run scores, the metric names of results.json and
the AUPRO limit (imports nothing: the leaderboard and the results read it without torch)."""

#: The two maps every run scores: the detector's baseline map and the refiner's map.
STAGES = ("base", "refined")
#: Every metric of results.json, in table order.
METRIC_KEYS = (
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "pixel_iou_max",
    "boundary_f1",
    "aupro",
    "pro_compat",
)
#: The metrics whose refined − base Δ gets a bootstrap interval (``results["intervals"]``), in table order.
INTERVAL_KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
#: The metrics of a size bin (``results["breakdown"][c]["sizes"][bin]``).
SIZE_KEYS = ("pixel_auroc", "pixel_ap", "aupro")
#: AUPRO integrates the PRO curve up to this false-positive rate (MVTec AD's definition; the run's
#: value is ``eval.aupro_limit``).
AUPRO_LIMIT = 0.3
#: Label-free threshold rules of ``eval.threshold.rule`` (anorefine.metrics.thresholds): none, a quantile
#: or mean + k·σ of normal images' values, or MEBin's per-image binarisation.
THRESHOLD_RULES = ("none", "quantile", "mean_std", "mebin")
#: Where the normal images of ``eval.threshold.source`` come from: the dataset's validation split of
#: normal images (MVTec AD 2's ``validation``) or the category's normal train images.
THRESHOLD_SOURCES = ("validation", "train")
