"""``python train.py [overrides]``: the same as ``anorefine train`` (README.md, conf/train.yaml)."""

import sys

from anorefine.cli import run_train

if __name__ == "__main__":
    run_train(sys.argv[1:])
