"""anorefine: config-driven industrial anomaly detection with map refiners."""

import warnings

# Deprecation notices that anomalib's own imports trigger; nothing a user of anorefine can act on.
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(timm\.layers|components\.dinov2)")

__version__ = "0.1.0"
