"""``python predict.py predict.images=DIR [overrides]``: the same as ``anorefine predict``
(docs/inspection.md): fit on the category's normal images, score the folder, write maps, masks,
overlays and scores.csv into the run folder.
"""

import sys

from anorefine.cli import run_predict

if __name__ == "__main__":
    run_predict(sys.argv[1:])
