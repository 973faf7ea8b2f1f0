"""Typed access to composed config nodes: a node as plain Python, a component's class checked against
its contract (imports no other anorefine module but the errors)."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from anorefine.errors import AnorefineError

T = TypeVar("T")


def resolved(node: DictConfig, enums_as_values: bool = True) -> dict[str, Any]:
    """A config node as plain Python, interpolations resolved (enums as their values unless
    ``enums_as_values`` is False): how settings reach components, checks and results.json."""
    container = OmegaConf.to_container(node, resolve=True, enum_to_str=enums_as_values)
    if not isinstance(container, dict):
        raise TypeError(f"expected a mapping config node, got {type(container).__name__}")
    return cast(dict[str, Any], container)


def choice(value: Any) -> str:
    """A closed-choice setting as the string the user typed: a run_choice Enum member's value (its
    ``str()`` would be ``Name.value``), or the string itself."""
    return str(getattr(value, "value", value))


def component_class(node: DictConfig, base: type[T]) -> type[T]:
    """The class a component node's ``_target_`` names, checked to be a ``base``."""
    cls = get_class(node._target_)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise AnorefineError(f"_target_ {node._target_} is not a {base.__name__}: name a subclass of it")
    return cls
