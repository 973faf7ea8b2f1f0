"""Every option of every config group composes and instantiates; misspelt keys fail by name."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest
import yaml
from conftest import compose_with, run_train
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import OmegaConf

from anorefine.assembly import build_component, build_logger
from anorefine.cli_help import help_text
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.settings import COMPONENT_GROUPS, signature_settings, yaml_target

#: Options that need a value the user must give (or a tiny model, since real weights are offline).
NEEDS = {
    ("dataset", "folder"): ["dataset.root=/some/folder"],
    ("model", "winclip"): ["model.clip=tiny"],
    ("model", "anomalyclip"): ["model.clip=tiny"],
    ("model", "anomalib"): ["model.weights=random"],
}
register_configs()


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every yaml file of every config group except experiment presets."""
    return sorted(
        (path.parent.name, path.stem)
        for path in CONF_DIR.glob("*/*.yaml")
        if path.parent.name not in ("experiment", "paper", "hydra", "common")
    )


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_option_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_with([f"{group}={option}", *NEEDS.get((group, option), [])])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if group == "protocol":  # a global preset: it names itself in eval.protocol
        assert resolved["eval"]["protocol"] == option
        return
    assert resolved[group].get("name", option) == option
    if group in ("model", "refiner", "curriculum") or (group == "prepare" and option != "none"):
        component = build_component(cfg[group])
        assert type(component).__module__.startswith("anorefine.")
    if group == "logger":
        logger = build_logger(cfg.logger, tmp_path)
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


def component_yamls() -> list[Path]:
    return sorted(
        p for group in COMPONENT_GROUPS for p in (CONF_DIR / group).glob("*.yaml") if yaml_target(p)
    )


def reference_settings(cls: type) -> dict[str, object]:
    """Constructor defaults by ``inspect.signature``; ``**kwargs`` stands for the first base's settings."""
    found: dict[str, object] = {}
    if not cls.__module__.startswith("anorefine"):
        return found  # object, nn.Module: no settings
    if "__init__" not in vars(cls):
        return reference_settings(cls.__bases__[0])
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            found.update({k: v for k, v in reference_settings(cls.__bases__[0]).items() if k not in found})
        elif name != "self" and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            found[name] = parameter.default
    return found


def plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", component_yamls(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_derived_schemas_equal_the_constructor_signatures(path: Path) -> None:
    target = yaml_target(path)
    cls = get_class(target)
    derived = {s.name: s.default for s in signature_settings(target)}
    reference = {k: plain(v) for k, v in reference_settings(cls).items() if v is not inspect.Parameter.empty}
    assert derived == reference


@pytest.mark.parametrize("path", component_yamls(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_component_yamls_set_only_what_differs_from_the_signature(path: Path) -> None:
    node = yaml.safe_load(path.read_text())
    defaults = {s.name: s.default for s in signature_settings(node["_target_"])}
    same = [k for k, v in node.items() if k in defaults and v == defaults[k]]
    assert not same, f"{path.name} repeats signature defaults: {same}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "key"),
    [("refiner.image_score=bogus", "refiner.image_score"), ("curriculum.mode=x", "curriculum.mode")],
)
def test_a_bad_choice_fails_in_one_line_before_any_data(override: str, key: str, tmp_path: Path) -> None:
    extra = ["refiner=ard"] if key.startswith("refiner") else ["curriculum=pgt", "refiner=ard"]
    started = time.perf_counter()
    run = run_train([*extra, override, f"paths.data_dir={tmp_path}/data"], tmp_path / "run")
    elapsed = time.perf_counter() - started
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith(f"error: {key}: Invalid value")
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # nothing read or written
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_help_lists_only_the_options_a_user_picks_each_described() -> None:
    text = help_text()
    rows = [line for line in text.splitlines() if line.startswith("  ") and "python" not in line]
    options = [row.split()[0] for row in rows]
    assert "patchcore" in options and "ard" in options and "mvtec" in options
    assert not any("schema" in option or option in ("common", "paper") for option in options)
    assert all(len(row.split(maxsplit=1)) == 2 for row in rows)  # every option described
    assert "paper:" not in text and "schema" not in text
