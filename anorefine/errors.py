"""User-facing errors: one line that names the problem and the fix."""


class AnorefineError(Exception):
    """Base class of every error the framework raises for bad input."""


class DataError(AnorefineError):
    """A dataset root, category, image or mask is missing or unreadable."""


class WeightsError(AnorefineError):
    """Model weights are not available offline."""


class MetricError(AnorefineError):
    """A metric cannot be computed on the given inputs."""
