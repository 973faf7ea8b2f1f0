"""The dataset contract, checked for every option of conf/dataset (a new YAML is picked up here).

Each dataset, built from its composed config on a small tree of its layout, must list categories,
read a train split of normal images and a labeled test split with both labels and a mask for every
defective image (a folder without ground_truth/ excepted), read every split it declares, reject an
unknown category, split or defect type in one line, and either fail on a missing root naming how to
get the data or generate it there.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import compose_with
from fixtures_data import (
    make_btad,
    make_folder,
    make_loco,
    make_mpdd,
    make_mvtec,
    make_mvtec_ad2,
    make_realiad,
    make_visa,
)
from omegaconf import OmegaConf

from anorefine.conf import CONF_DIR
from anorefine.config import DatasetConfig, dataset_schema
from anorefine.data import demo as demo_module
from anorefine.data import transfer as transfer_module
from anorefine.data.dataset import mask_files
from anorefine.data.records import is_labeled
from anorefine.datasets import DatasetSource, build_dataset, dataset_class, dataset_names
from anorefine.errors import DataError
from anorefine.settings import yaml_target

#: The generators' counts, cut so that a generated dataset takes seconds.
TINY_COUNTS = {
    demo_module: ("N_TRAIN", "N_TEST_GOOD", "N_PER_DEFECT"),
    transfer_module: ("N_TRAIN", "N_TEST_GOOD", "N_PER_KIND"),
}


@pytest.fixture
def tiny_generators() -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    for module, names in TINY_COUNTS.items():
        for name, value in zip(names, (3, 2, 1), strict=True):
            patch.setattr(module, name, value)
    yield
    patch.undo()


#: The fixture writer of each layout other than MVTec AD's (tests/fixtures_data.py).
TREES: dict[str, Callable[[Path], Path]] = {
    "visa": make_visa,
    "mvtec_ad2": make_mvtec_ad2,
    "mvtec_loco": make_loco,
    "btad": make_btad,
    "mpdd": make_mpdd,
    "realiad": make_realiad,
    "folder": make_folder,
}


def tree_for(name: str, folder: Path) -> Path:
    """A small tree in ``name``'s layout (a generated dataset: a fresh folder it writes itself)."""
    if dataset_class(name).generated:
        return folder / name
    return TREES.get(name, make_mvtec)(folder / name)


def build(name: str, root: Path, *overrides: str) -> DatasetSource:
    return build_dataset(compose_with([f"dataset={name}", f"dataset.root={root}", *overrides]).dataset)


def test_every_option_names_a_dataset_class() -> None:
    known = {"mvtec", "visa", "folder", "demo", "demo_aux", "transfer"}
    assert known | {"mvtec_ad2", "mvtec_loco", "btad", "mpdd", "realiad"} <= set(dataset_names())
    for name in dataset_names():
        cls = dataset_class(name)
        assert issubclass(cls, DatasetSource), name
        assert cls.musc_mask_rule in ("full", "nonzero") and all(k > 0 for k in cls.musc_k_list)
        assert cls.aux_partner is None or cls.aux_partner in dataset_names()


@pytest.mark.parametrize("name", dataset_names())
def test_each_schema_is_the_shared_fields_plus_the_class_s_own_settings(name: str) -> None:
    target = yaml_target(CONF_DIR / "dataset" / f"{name}.yaml")
    assert target is not None
    schema = dataset_schema(target)
    shared = {f.name for f in dataclasses.fields(DatasetConfig)}
    parameters = inspect.signature(dataset_class(name)).parameters.items()
    own = {key: p.default for key, p in parameters if key not in shared and p.kind != p.VAR_KEYWORD}
    values = OmegaConf.to_container(OmegaConf.structured(schema))
    assert isinstance(values, dict) and issubclass(schema, DatasetConfig)
    assert {k: v for k, v in values.items() if k not in shared} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in own.items()
    }
    assert pickle.loads(pickle.dumps(schema)) is schema  # by reference: launchers' workers rebuild it


@pytest.mark.parametrize("name", dataset_names())
def test_the_contract(name: str, tmp_path: Path, tiny_generators: None) -> None:
    source = build(name, tree_for(name, tmp_path))
    root = source.ensure_root()
    categories = source.selected_categories()
    assert categories and categories == source.list_categories()
    category = categories[0]
    train, test = source.records(category, "train"), source.records(category, "test")
    assert train and all(r.label == 0 and r.image_path.is_file() for r in train)
    assert {r.label for r in test} == {0, 1} and all(r.image_path.is_relative_to(root) for r in test)
    defective = [r.mask_path for r in test if r.label == 1]
    assert all(mask is not None and all(f.is_file() for f in mask_files(mask)) for mask in defective)
    assert source.records(category, "test") == test  # deterministic order
    for split in source.splits:  # every declared split reads, each labeled throughout or not at all
        records = source.records(category, split)
        assert records and len({is_labeled(r) for r in records}) == 1 and records[0].category == category
    with pytest.raises(DataError, match="nope"):
        build(name, root, "dataset.categories=[nope]").selected_categories()
    with pytest.raises(DataError, match="split 'val'"):
        source.records(category, "val")
    with pytest.raises(DataError, match=r"dataset\.defect_types"):
        build(name, root, "dataset.defect_types=[no_such_kind]").records(category, "test")
    kind = next(r.defect_type for r in test if r.label == 1)
    kept = build(name, root, f"dataset.defect_types=[{kind}]").records(category, "test")
    assert {r.defect_type for r in kept if r.label} == {kind} and sum(r.label == 0 for r in kept) > 0


@pytest.mark.parametrize("name", [n for n in dataset_names() if not dataset_class(n).generated])
def test_a_missing_root_fails_naming_it_and_how_to_get_the_data(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(DataError, match=f"{missing} does not exist: .*(download|dataset.root)"):
        build(name, missing).selected_categories()
    assert not missing.exists()


def test_the_facts_the_papers_need() -> None:
    """MuSc's rules and AnomalyCLIP's partners as published (docs/clip_detectors.md)."""
    assert (dataset_class("visa").musc_mask_rule, dataset_class("visa").musc_k_list) == ("nonzero", (1, 8, 9))
    assert (dataset_class("mvtec").musc_mask_rule, dataset_class("mvtec").musc_k_list) == ("full", (1, 2, 3))
    partners = {name: dataset_class(name).aux_partner for name in ("mvtec", "visa", "demo", "folder")}
    assert partners == {"mvtec": "visa", "visa": "mvtec", "demo": "demo_aux", "folder": None}
    counts = {"mvtec": 15, "visa": 12, "mvtec_ad2": 8, "mvtec_loco": 5, "btad": 3, "mpdd": 6, "realiad": 30}
    assert {name: len(dataset_class(name).official_categories) for name in counts} == counts
    assert all(
        dataset_class(name).aux_partner is None
        for name in ("mvtec_ad2", "mvtec_loco", "btad", "mpdd", "realiad")
    )


def test_the_demo_partner_is_another_draw(tmp_path: Path, tiny_generators: None) -> None:
    demo = build("demo", tmp_path / "demo")
    aux = build("demo_aux", tmp_path / "aux")
    first = demo.records("brick", "train")[0].image_path.read_bytes()
    assert aux.records("brick", "train")[0].image_path.read_bytes() != first
