"""Every option of every config group composes and instantiates; misspelt keys fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from anorefine.config import register_configs
from anorefine.run import build_component, build_logger

CONF = Path(__file__).resolve().parent.parent / "conf"
#: Options that need a value the user must give (or a tiny model, since real weights are offline).
NEEDS = {
    ("dataset", "folder"): ["dataset.root=/some/folder"],
    ("model", "winclip"): ["model.clip=tiny"],
    ("model", "anomalyclip"): ["model.clip=tiny"],
}
register_configs()


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every yaml file of every config group except experiment presets."""
    return sorted(
        (path.parent.name, path.stem)
        for path in CONF.glob("*/*.yaml")
        if path.parent.name not in ("experiment", "paper", "hydra")
    )


def compose_with(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"{group}={option}", *NEEDS.get((group, option), [])])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved[group].get("name", option) == option
    if group in ("model", "refiner", "curriculum"):
        component = build_component(cfg[group])
        assert type(component).__module__.startswith("anorefine.")
    if group == "logger":
        logger = build_logger(cfg, tmp_path)
        assert (logger is False) == (option == "none")


def test_defaults_are_the_demo_with_patchcore() -> None:
    cfg = compose_with([])
    assert (cfg.dataset.name, cfg.model.name, cfg.refiner.name) == ("demo", "patchcore", "none")
    assert cfg.model.backbone == "efficientnet_lite0"
    assert cfg.dataset.image_size == cfg.model.image_size == 256


def test_misspelt_key_fails_naming_it() -> None:
    with pytest.raises(ConfigCompositionException, match="catgories"):
        compose_with(["dataset.catgories=[brick]"])
    with pytest.raises(ConfigCompositionException, match="corset_ratio"):
        compose_with(["model.corset_ratio=0.2"])
