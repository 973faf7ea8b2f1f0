"""anorefine: config-driven industrial anomaly detection with map refiners."""

__version__ = "0.1.0"
