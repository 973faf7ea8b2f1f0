"""Where model weights come from: one weights directory, searched before any download, or nowhere
(``model.weights=random``: the real architecture with seeded random weights, for rehearsals and speed
measurements; its results are smoke-only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

import torch

from anorefine.errors import WeightsError

#: ``model.weights``: the released weights (the weights dir, or a package), or random ones.
WeightsSource = Literal["pretrained", "random"]
PRETRAINED: Final = "pretrained"
RANDOM: Final = "random"

#: Environment variable naming the weights directory when no setting does.
WEIGHTS_ENV = "ANOREFINE_WEIGHTS_DIR"
DOWNLOAD_HINT = "python scripts/download.py weights{options} --dir {dir}"


def resolve_weights_dir(configured: str | os.PathLike | None = None) -> Path:
    """The weights directory, by the one precedence rule: a setting given (``paths.weights_dir`` on
    the command line, a constructor's ``weights_dir``) wins, else $ANOREFINE_WEIGHTS_DIR, else
    ./weights. conf/paths/default.yaml writes the same rule for the config."""
    chosen = configured or os.environ.get(WEIGHTS_ENV) or "weights"
    return Path(chosen).expanduser()


def find_weight_file(
    weights_dir: str | os.PathLike, relative_names: list[str], what: str, download_options: str = ""
) -> Path:
    """Return the first existing ``weights_dir/<name>``; otherwise raise one error naming what and how
    (``download_options``: what ``scripts/download.py weights`` needs besides ``--dir`` to fetch it)."""
    root = Path(weights_dir)
    for name in relative_names:
        candidate = root / name
        if candidate.is_file():
            return candidate
    expected = root / relative_names[0]
    raise WeightsError(
        f"{what} weights not found at {expected} (no internet here to fetch them): "
        f"run `{DOWNLOAD_HINT.format(options=download_options, dir=root)}` on a machine with internet "
        f"and copy {root} over, "
        f"or set paths.weights_dir / ${WEIGHTS_ENV} to a folder that holds {relative_names[0]}"
    )


@contextmanager
def seeded_weights(seed: int) -> Iterator[None]:
    """Torch's CPU random state seeded with ``seed`` inside and restored after: weights drawn inside
    depend on the seed alone, and draw nothing that later steps of the run would miss."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
