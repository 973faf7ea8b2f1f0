"""Inspection entry point: `python predict.py predict.images=DIR [overrides]` (docs/inspection.md).

The same config as train.py (conf/train.yaml) with ``mode=predict``: fit on the category's normal
images, score the folder, write maps, masks, overlays and scores.csv into the run folder.
"""

import hydra
from omegaconf import DictConfig

from anorefine.cli import main_with_one_line_errors, train
from anorefine.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Compose the config and score the folder."""
    train(cfg)


if __name__ == "__main__":
    main_with_one_line_errors(main)
