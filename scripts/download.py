"""Download what anorefine needs that is not on PyPI.

python scripts/download.py mvtec --root DIR       # MVTec AD archive, sha256-verified, extracted
python scripts/download.py visa --root DIR        # VisA archive, likewise
python scripts/download.py mvtec_loco --root DIR  # MVTec LOCO AD archive, likewise
python scripts/download.py btad --root DIR        # BTAD archive (a zip), likewise
python scripts/download.py weights [--dir DIR]    # every checkpoint the configs name, into the weights dir
python scripts/download.py weights --backbone resnet50  # and a timm backbone's (an anomalib model's)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anorefine.conf import CONF_DIR
from anorefine.data.download import ARCHIVES, download_dataset
from anorefine.errors import AnorefineError
from anorefine.weights import resolve_weights_dir
from anorefine.weights_download import configured_clips, download_backbone_weights, download_clip_weights


def _print_progress(done: int, total: int | None) -> None:
    of_total = f" / {total / 2**20:,.0f}" if total else ""
    print(f"\r{done / 2**20:,.0f}{of_total} MiB", end="", file=sys.stderr, flush=True)


def _download_dataset(args: argparse.Namespace) -> None:
    root = download_dataset(args.command, args.root, progress=_print_progress)
    print(f"\n{ARCHIVES[args.command].name} is ready in {root}")


def _download_weights(args: argparse.Namespace) -> None:
    weights_dir = resolve_weights_dir(args.dir)
    clips = configured_clips(CONF_DIR / "model")
    try:
        paths = download_clip_weights(weights_dir, clips) + download_backbone_weights(weights_dir)
        if args.backbone:
            paths += download_backbone_weights(weights_dir, args.backbone)
    except OSError as error:
        raise AnorefineError(
            f"downloading weights into {weights_dir} failed ({error}): this needs internet"
        ) from error
    for path in paths:
        print(f"ok {path}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per dataset archive, plus `weights`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for kind, archive in ARCHIVES.items():
        sub = commands.add_parser(kind, help=f"download and extract {archive.name} ({archive.filename})")
        sub.add_argument("--root", type=Path, required=True, help="folder to extract into (new or empty)")
        sub.set_defaults(handler=_download_dataset)
    weights = commands.add_parser("weights", help="download every checkpoint the model configs name")
    weights.add_argument(
        "--dir", type=Path, default=None, help="weights dir (default: $ANOREFINE_WEIGHTS_DIR or ./weights)"
    )
    weights.add_argument(
        "--backbone", action="append", default=[], help="also a timm backbone's ImageNet weights (repeatable)"
    )
    weights.set_defaults(handler=_download_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except AnorefineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
