"""Config schemas derived from constructor signatures: every component setting is defined once.

A component's YAML (conf/model, conf/refiner, conf/curriculum) names its class in ``_target_`` and
sets only what differs from the constructor's defaults. Its schema, a dataclass with one field per
constructor parameter (type and default from the signature), is derived here and stored in Hydra's
ConfigStore as ``schema/<group>/<file>``; each YAML lists it first in its defaults. So a misspelt key
fails naming it, a wrong type fails, and a closed choice (``Literal[...]``, turned into an Enum here)
fails when the config is composed: before any data is read or any model is built.

Signatures are read from the source with ``ast``, not by importing the classes: importing torch,
timm and open_clip takes 10-15 s on two cores, and composing a config, ``--help`` and a bad-input
error must take seconds. A test checks every derived schema against ``inspect.signature``.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigStore

PACKAGE_DIR = Path(__file__).resolve().parent
#: Config groups whose options are components with a ``_target_`` (one derived schema per file).
COMPONENT_GROUPS = ("model", "refiner", "curriculum", "prepare")
SCALARS: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_UNSET = object()
#: Published names of derived classes: ``Schema__<target with __ for .>[__nested]`` and
#: ``Choice__<target>__<parameter>``.
SCHEMA_PREFIX, NESTED_SUFFIX, CHOICE_PREFIX = "Schema__", "__nested", "Choice__"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One constructor parameter: name, OmegaConf-compatible type, default (``_UNSET``: required)."""

    name: str
    annotation: Any
    default: Any = _UNSET


def module_file(module: str) -> Path:
    """Source file of an ``anorefine`` module, found without importing it."""
    parts = module.split(".")
    if parts[0] != "anorefine":
        raise ValueError(f"{module}: schemas are derived for anorefine's own classes only")
    path = PACKAGE_DIR.joinpath(*parts[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def _parse(module: str) -> ast.Module:
    return ast.parse(module_file(module).read_text(), filename=str(module_file(module)))


def _imports(module: str) -> dict[str, str]:
    """Names imported by ``from anorefine.x import Name`` in a module: name -> dotted origin."""
    found = {}
    for node in _parse(module).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anorefine"):
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def _constant(module: str, name: str) -> Any:
    """The literal value of a module-level constant, following ``from anorefine... import`` chains."""
    for node in _parse(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        value = getattr(node, "value", None)
        if value is not None and any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(value)
    origin = _imports(module).get(name)
    if origin is None:
        raise ValueError(f"{module}: default {name} is neither a literal nor a module constant")
    source, attribute = origin.rsplit(".", 1)
    return _constant(source, attribute)


def _default(module: str, node: ast.expr) -> Any:
    """A parameter's default: a literal, a constant name, or a tuple of those (as a list)."""
    if isinstance(node, ast.Name):
        value = _constant(module, node.id)
    elif isinstance(node, ast.Tuple | ast.List):
        value = [_default(module, item) for item in node.elts]
    else:
        value = ast.literal_eval(node)
    return list(value) if isinstance(value, tuple) else value


def publish(name: str, cls: Any, module: str = __name__) -> Any:
    """``cls`` made importable as ``<module>.<name>``: a launcher's worker process (joblib, Ray)
    unpickles Hydra's config store by reference, and the module's ``__getattr__`` (below for this one)
    rebuilds the class there from its name; pickled by value, a derived dataclass loses its defaults."""
    cls.__module__, cls.__qualname__ = module, name
    setattr(sys.modules[module], name, cls)
    return cls


def encoded(target: str) -> str:
    """A dotted target as part of a Python name (``.`` as ``__``)."""
    return target.replace(".", "__")


@cache
def choice_enum(owner: str, name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum whose members are the allowed values (names equal values); ``owner``: the target."""
    label = f"{CHOICE_PREFIX}{encoded(owner)}__{name}"
    return publish(label, enum.Enum(label, {v: v for v in values}, type=str, module=__name__))


def _annotation(module: str, owner: str, name: str, node: ast.expr | None) -> Any:
    """An OmegaConf-compatible type for an annotation; unknown classes become Any (or their schema)."""
    if node is None:
        return Any
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        return _annotation(module, owner, name, ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return _named_annotation(module, owner, name, node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        parts = [node.left, node.right]
        optional = any(isinstance(p, ast.Constant) and p.value is None for p in parts)
        others = [p for p in parts if not (isinstance(p, ast.Constant) and p.value is None)]
        if len(others) != 1:
            return Any  # OmegaConf has no unions other than Optional
        inner = _annotation(module, owner, name, others[0])
        return Optional[inner] if optional and inner is not Any else inner  # noqa: UP045 (a runtime type)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        head, args = node.value.id, node.slice
        items = list(args.elts) if isinstance(args, ast.Tuple) else [args]
        if head == "Literal":
            return choice_enum(owner, name, tuple(ast.literal_eval(item) for item in items))
        if head in ("list", "Sequence", "tuple") and len(items) == 2 and isinstance(items[1], ast.Constant):
            return list[_annotation(module, owner, name, items[0])]  # type: ignore[misc]  # tuple[X, ...]; a runtime type
        if head in ("list", "Sequence"):
            return list[_annotation(module, owner, name, items[0])]  # type: ignore[misc]  # a runtime type
        if head == "tuple":
            return tuple[tuple(_annotation(module, owner, name, item) for item in items)]  # type: ignore[misc]  # runtime
        if head == "dict":
            return dict[  # type: ignore[misc]  # a runtime type
                _annotation(module, owner, name, items[0]), _annotation(module, owner, name, items[1])
            ]
    return Any


def _module_assignment(module: str, name: str) -> ast.expr | None:
    """The value of a module-level ``name = ...`` (a type alias such as ``Mode = Literal[...]``)."""
    for node in _parse(module).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value
    return None


def _class_exists(module: str, name: str) -> bool:
    return any(isinstance(n, ast.ClassDef) and n.name == name for n in _parse(module).body)


def _named_annotation(module: str, owner: str, name: str, type_name: str) -> Any:
    """A bare name: a scalar, a type alias of this or an imported module, a nested component, or Any."""
    if type_name in SCALARS:
        return SCALARS[type_name]
    alias = _module_assignment(module, type_name)
    if alias is not None:
        return _annotation(module, owner, name, alias)
    origin = _imports(module).get(type_name)
    if origin is None:
        return Any
    source, attribute = origin.rsplit(".", 1)
    if _class_exists(source, attribute):
        return component_schema(origin, nested=True)  # a nested component (e.g. curriculum.synthesis)
    return _named_annotation(source, owner, name, attribute)


def signature_settings(target: str) -> list[Setting]:
    """The constructor parameters of ``target`` (a dotted class path), from its source."""
    module, class_name = target.rsplit(".", 1)
    classes = [n for n in _parse(module).body if isinstance(n, ast.ClassDef) and n.name == class_name]
    if not classes:
        raise ValueError(f"_target_ {target}: no class {class_name} in {module_file(module)}")
    init = next((n for n in classes[0].body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return _base_settings(module, classes[0])
    args = init.args.args[1:]  # after self
    defaults: list[Any] = [_UNSET] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
    kw_defaults = [_UNSET if d is None else d for d in init.args.kw_defaults]  # None: a required kwarg
    settings = []
    for arg, default in zip([*args, *init.args.kwonlyargs], [*defaults, *kw_defaults], strict=True):
        annotation = _annotation(module, target, arg.arg, arg.annotation)
        settings.append(
            Setting(arg.arg, annotation, _UNSET if default is _UNSET else _default(module, default))
        )
    if init.args.kwarg is not None:  # ``**backbone``: the rest are the base class's settings
        names = {setting.name for setting in settings}
        settings += [s for s in _base_settings(module, classes[0]) if s.name not in names]
    return settings


def _base_settings(module: str, node: ast.ClassDef) -> list[Setting]:
    """The settings of a class's first base, when it is an anorefine class (else none)."""
    if not node.bases or not isinstance(node.bases[0], ast.Name):
        return []
    name = node.bases[0].id
    if _class_exists(module, name):
        return signature_settings(f"{module}.{name}")
    origin = _imports(module).get(name)
    return signature_settings(origin) if origin else []


def constant(value: Any) -> Callable[[], Any]:
    """A default factory returning ``value`` (a list or dict default of a constructor)."""
    return lambda: value


def schema_fields(settings: list[Setting]) -> list[tuple[str, Any, Any]]:
    """Dataclass fields of constructor settings: each one's type and default (``???``: required)."""
    fields: list[tuple[str, Any, Any]] = []
    for setting in settings:
        if setting.default is _UNSET:
            fields.append((setting.name, setting.annotation, dataclasses.field(default="???")))
        elif isinstance(setting.default, list | dict):
            fields.append(
                (
                    setting.name,
                    setting.annotation,
                    dataclasses.field(default_factory=constant(setting.default)),
                )
            )
        else:
            annotation = setting.annotation
            if setting.default is None and annotation is not Any:
                annotation = Optional[annotation]  # noqa: UP045 (a runtime type)
            fields.append((setting.name, annotation, dataclasses.field(default=setting.default)))
    return fields


@cache
def component_schema(target: str, nested: bool = False) -> type:
    """The schema dataclass of a component: ``_target_``, ``name`` (a label, top level only) and every
    constructor parameter; ``nested``: the schema of a component inside another's settings."""
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    if not nested:
        fields.append(("name", Optional[str], dataclasses.field(default=None)))  # noqa: UP045
    fields += schema_fields(signature_settings(target))
    name = f"{SCHEMA_PREFIX}{encoded(target)}{NESTED_SUFFIX if nested else ''}"
    return publish(name, dataclasses.make_dataclass(name, fields))


def __getattr__(name: str) -> Any:
    """A derived schema or choice Enum by its published name, built on first use (worker processes)."""
    if name.startswith(SCHEMA_PREFIX):
        label = name.removeprefix(SCHEMA_PREFIX)
        nested = label.endswith(NESTED_SUFFIX)
        return component_schema(label.removesuffix(NESTED_SUFFIX).replace("__", "."), nested)
    if name.startswith(CHOICE_PREFIX):
        owner = name.removeprefix(CHOICE_PREFIX).rsplit("__", 1)[0].replace("__", ".")
        signature_settings(owner)  # creates and publishes the owner's choice Enums
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def yaml_target(path: Path) -> str | None:
    """The ``_target_`` a component YAML names (None when it names none)."""
    node = yaml.safe_load(path.read_text()) or {}
    return node.get("_target_")


def effective_settings(path: Path) -> dict[str, Any]:
    """A component YAML's settings with the signature defaults it does not repeat filled in."""
    node = yaml.safe_load(path.read_text()) or {}
    target = node.get("_target_")
    defaults = (
        {s.name: s.default for s in signature_settings(target) if s.default is not _UNSET} if target else {}
    )
    return {**defaults, **{k: v for k, v in node.items() if k != "defaults"}}


def register_component_schemas(conf_dir: Path) -> None:
    """Store the derived schema of every component YAML as ``schema/<group>/<file>`` (idempotent)."""
    store = ConfigStore.instance()
    for group in COMPONENT_GROUPS:
        for path in sorted((conf_dir / group).glob("*.yaml")):
            target = yaml_target(path)
            if target:
                store.store(group=f"schema/{group}", name=path.stem, node=component_schema(target))
