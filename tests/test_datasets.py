"""The dataset contract, checked for every option of conf/dataset (a new YAML is picked up here).

Each dataset, built from its composed config on a small tree of its layout, must list categories,
read a train split of normal images and a test split with both labels and a mask for every defective
image (a folder without ground_truth/ excepted), reject an unknown category, split or defect type in
one line, and either fail on a missing root naming how to get the data or generate it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compose_with
from fixtures_data import make_mvtec, make_visa

from anorefine.data import demo as demo_module
from anorefine.data import transfer as transfer_module
from anorefine.datasets import DatasetSource, build_dataset, dataset_class, dataset_names
from anorefine.errors import DataError

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


def tree_for(name: str, folder: Path) -> Path:
    """A small tree in ``name``'s layout (a generated dataset: a fresh folder it writes itself)."""
    if dataset_class(name).generated:
        return folder / name
    if name == "visa":  # the fixture writers are per layout: VisA's split CSV, or the MVTec folders
        return make_visa(folder / name)
    return make_mvtec(folder / name)


def build(name: str, root: Path, *overrides: str) -> DatasetSource:
    return build_dataset(compose_with([f"dataset={name}", f"dataset.root={root}", *overrides]).dataset)


def test_every_option_names_a_dataset_class() -> None:
    assert {"mvtec", "visa", "folder", "demo", "demo_aux", "transfer"} <= set(dataset_names())
    for name in dataset_names():
        cls = dataset_class(name)
        assert issubclass(cls, DatasetSource), name
        assert cls.musc_mask_rule in ("full", "nonzero") and all(k > 0 for k in cls.musc_k_list)
        assert cls.aux_partner is None or cls.aux_partner in dataset_names()


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
    assert all(r.mask_path is not None and r.mask_path.is_file() for r in test if r.label == 1)
    assert source.records(category, "test") == test  # deterministic order
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
    assert len(dataset_class("mvtec").official_categories) == 15
    assert len(dataset_class("visa").official_categories) == 12


def test_the_demo_partner_is_another_draw(tmp_path: Path, tiny_generators: None) -> None:
    demo = build("demo", tmp_path / "demo")
    aux = build("demo_aux", tmp_path / "aux")
    first = demo.records("brick", "train")[0].image_path.read_bytes()
    assert aux.records("brick", "train")[0].image_path.read_bytes() != first
