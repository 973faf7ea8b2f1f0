"""Write a stand-in of MVTec AD or VisA: the released layout, file names, sizes, modes and mask encodings,
with a fraction of the images, drawn from anorefine's textures and defect painters (docs/datasets.md).

python scripts/standin.py mvtec --root DIR                        # 5% of every split, released sizes
python scripts/standin.py visa --root DIR --categories candle,pcb1 --fraction 0.1 --size-scale 0.25
python scripts/standin.py visa --root DIR --visa-mask-values 1    # masks 0/1 as some VisA copies ship

A re-run with the same options is a no-op; other options replace the tree. Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anorefine.data.standin import LAYOUTS, VISA_MASK_VALUES, write_standin
from anorefine.errors import AnorefineError


def build_parser() -> argparse.ArgumentParser:
    """The CLI: the dataset to imitate, then the options of its stand-in."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=list(LAYOUTS), help="the dataset to imitate")
    parser.add_argument("--root", type=Path, required=True, help="folder to write into (new or empty)")
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.05,
        help="share of every split and defect type, rounded half up, at least 1 (default 0.05)",
    )
    parser.add_argument(
        "--categories", default=None, help="comma-separated categories (default: all of the dataset)"
    )
    parser.add_argument(
        "--size-scale",
        type=float,
        default=1.0,
        help="image sizes times this, aspect kept (default 1.0: the released sizes)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the drawing (default 0)")
    parser.add_argument(
        "--visa-mask-values",
        type=int,
        default=255,
        choices=VISA_MASK_VALUES,
        help="value of anomalous mask pixels of VisA (default 255, as released)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    categories = None if args.categories is None else [c.strip() for c in args.categories.split(",")]
    try:
        root = write_standin(
            args.dataset,
            args.root,
            categories,
            args.fraction,
            args.size_scale,
            args.seed,
            args.visa_mask_values,
        )
    except AnorefineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset} stand-in is ready in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
