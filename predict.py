"""Inspection entry point: `python predict.py predict.images=DIR [overrides]` (docs/inspection.md).

The same as `python train.py --config-name predict ...`: train.yaml's configs in ``mode=predict``
(conf/predict.yaml): fit on the category's normal images, score the folder, write maps, masks,
overlays and scores.csv into the run folder.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[1:1] = ["--config-name", "predict"]
    runpy.run_path(str(Path(__file__).with_name("train.py")), run_name="__main__")
