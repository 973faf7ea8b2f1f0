"""The body of ``train.py``: Hydra config in, one run out; bad input exits with one line."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from anorefine.errors import AnorefineError
from anorefine.run import run_experiment


def train(cfg: DictConfig) -> None:
    """Run the experiment the composed config describes, in Hydra's run directory."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run_experiment(cfg, run_dir, list(hydra_cfg.overrides.task))
    except AnorefineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
