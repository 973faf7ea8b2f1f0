"""Entry point: `python train.py [overrides]` (see conf/train.yaml and README.md)."""

import hydra
from omegaconf import DictConfig

from anorefine.cli import main_with_one_line_errors, train
from anorefine.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Compose the config and run it."""
    train(cfg)


if __name__ == "__main__":
    main_with_one_line_errors(main)
