"""Fetch every CLIP checkpoint the model configs name into the weights dir (needs internet).

Used by ``python scripts/download.py weights``; also runnable alone:
``python scripts/download_weights.py [--dir WEIGHTS_DIR]``. Each checkpoint is downloaded through
open_clip's own pretrained download (into a temporary cache), loaded, and its state dict written to
``<weights_dir>/open_clip/<model>-<pretrained>.pt``, where the detectors look for it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import open_clip
from omegaconf import OmegaConf

from anorefine.detectors.clip_models import TINY, checkpoint_name, torch_save_atomic
from anorefine.weights import resolve_weights_dir

MODEL_CONFIGS = Path(__file__).resolve().parent.parent / "conf" / "model"


def configured_clips(conf_dir: Path = MODEL_CONFIGS) -> list[tuple[str, str]]:
    """The (model, pretrained tag) pairs named by ``clip``/``pretrained`` in the model configs."""
    pairs = set()
    for path in sorted(conf_dir.glob("*.yaml")):
        node = OmegaConf.load(path)
        clip, pretrained = node.get("clip"), node.get("pretrained")
        if isinstance(clip, str) and clip != TINY and isinstance(pretrained, str):
            pairs.add((clip, pretrained))
    return sorted(pairs)


def download_clip_weights(weights_dir: str | Path, models: list[tuple[str, str]] | None = None) -> list[Path]:
    """Write each checkpoint missing from ``weights_dir``; returns the paths of all of them."""
    paths = []
    for model, pretrained in configured_clips() if models is None else models:
        target = Path(weights_dir) / checkpoint_name(model, pretrained)
        if not target.is_file():
            print(f"downloading {model} ({pretrained}) -> {target}")
            with tempfile.TemporaryDirectory() as cache:
                clip = open_clip.create_model(model, pretrained=pretrained, cache_dir=cache)
                torch_save_atomic(clip.state_dict(), target)
        paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help="weights dir (default: $ANOREFINE_WEIGHTS_DIR or ./weights)"
    )
    args = parser.parse_args(argv)
    for path in download_clip_weights(args.dir or resolve_weights_dir()):
        print(f"ok {path}")


if __name__ == "__main__":
    main()
