"""The dataset contract (``DatasetSource``) and how a config names one (``conf/dataset/<name>.yaml``)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from anorefine.conf import CONF_DIR
from anorefine.data.records import ImageRecord
from anorefine.errors import DataError
from anorefine.nodes import resolved
from anorefine.settings import signature_settings

#: The splits every dataset has: normal training images, and the labeled test images a run scores.
SPLITS = ("train", "test")


class DatasetSource(ABC):
    """One dataset: where it lives, its categories, the records of each split, and its facts.

    Built from the ``dataset`` config node (``build_dataset``): ``name`` is the option's name,
    ``categories`` and ``defect_types`` the selection (None: all), ``generation_seed`` the seed of a
    generated dataset. Subclasses implement ``list_categories`` and ``read_split`` and say how to get
    the data (``root_hint``); a generated dataset overrides ``ensure_root``. A subclass's own
    constructor parameters are dataset settings: its YAML's schema gains them and ``build_dataset``
    passes them from the node.
    """

    #: The splits ``records`` reads: ``train`` and ``test`` (the labeled split a run scores), then any
    #: the dataset adds (e.g. ``validation``, or MVTec AD 2's unlabeled ``test_private``).
    splits: ClassVar[tuple[str, ...]] = SPLITS

    #: ``prepare.aux_dataset=auto``: the dataset (a conf/dataset name) whose test split trains
    #: AnomalyCLIP's prompts when this one is evaluated (the zero-shot protocol); None: none known.
    aux_partner: ClassVar[str | None] = None
    #: MuSc's published mask rule (``protocol=musc``): ``full`` (== 255 after resizing) or ``nonzero``.
    musc_mask_rule: ClassVar[str] = "full"
    #: MuSc's published RsCIN window sizes on this dataset.
    musc_k_list: ClassVar[tuple[int, ...]] = (1, 2, 3)
    #: The categories a published mean covers, in official order (empty: no published means).
    official_categories: ClassVar[tuple[str, ...]] = ()
    #: The splits whose labels are not published, scored only into ``eval.submission`` files.
    unlabeled_splits: ClassVar[tuple[str, ...]] = ()
    #: True for a dataset ``ensure_root`` writes on first use (a missing root is not an error).
    generated: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        root: str | Path,
        categories: Sequence[str] | None = None,
        defect_types: Sequence[str] | None = None,
        generation_seed: int = 0,
    ) -> None:
        self.name = name
        self.root = Path(root).expanduser()
        self.categories = list(categories) if categories else None
        self.defect_types = list(defect_types) if defect_types is not None else None
        self.generation_seed = generation_seed

    @abstractmethod
    def root_hint(self) -> str:
        """How a user gets this dataset into ``self.root`` (the end of a missing-root error)."""

    @abstractmethod
    def list_categories(self) -> list[str]:
        """The categories present under the root (official order where there is one)."""

    @abstractmethod
    def read_split(self, category: str, split: str) -> list[ImageRecord]:
        """Every record of ``split`` of ``category``, in a sorted, deterministic order."""

    def ensure_root(self) -> Path:
        """The root, ready to read: a missing one fails naming how to get it (generated datasets
        write it here on first use)."""
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist: {self.root_hint()}")
        return self.root

    def selected_categories(self) -> list[str]:
        """The categories to run: those asked for, each checked to exist; all found when none asked for."""
        available = self.list_categories()
        if not available:
            raise DataError(
                f"no categories found under {self.root}: check dataset.root for dataset={self.name}"
            )
        asked = self.categories or available
        unknown = [name for name in asked if name not in available]
        if unknown:
            raise DataError(
                f"unknown category {unknown[0]!r} in {self.root}: available are {', '.join(available)}; "
                f"set dataset.categories=[...] to some of them"
            )
        return asked

    def records(self, category: str, split: str) -> list[ImageRecord]:
        """The records a run reads: ``split`` of ``category``, the test split cut to ``defect_types``."""
        available = self.list_categories()
        if category not in available:
            raise DataError(
                f"category '{category}' is not in the {self.name} dataset at {self.root} (available: "
                f"{', '.join(available) or 'none'}): set dataset.categories to a list of available ones"
            )
        if split not in self.splits:
            raise DataError(f"split '{split}' is not one of {self.name}'s splits: {', '.join(self.splits)}")
        records = self.read_split(category, split)
        if split == "test":
            records = select_defect_types(records, self.defect_types)
        if not records:
            raise DataError(f"no {split} images for category {category!r} under {self.root}")
        return records


def select_defect_types(records: list[ImageRecord], defect_types: list[str] | None) -> list[ImageRecord]:
    """The good records and those of ``defect_types`` (all records when None); each type must exist."""
    if defect_types is None:
        return records
    found = sorted({r.defect_type for r in records if r.label == 1})
    missing = [t for t in defect_types if t not in found]
    if missing:
        category = records[0].category if records else "?"
        raise DataError(
            f"dataset.defect_types: {missing[0]!r} is not a defect type of category {category!r} "
            f"(found: {', '.join(found) or 'none'}); set dataset.defect_types to some of them or null"
        )
    return [r for r in records if r.label == 0 or r.defect_type in defect_types]


def dataset_names() -> list[str]:
    """The datasets a run can name: the options of conf/dataset."""
    return sorted(path.stem for path in (CONF_DIR / "dataset").glob("*.yaml"))


@functools.cache
def dataset_class(name: str) -> type[DatasetSource]:
    """The class ``conf/dataset/<name>.yaml`` names in ``_target_`` (an unknown name fails, naming the
    known ones)."""
    path = CONF_DIR / "dataset" / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(dataset_names())}")
    loaded = OmegaConf.load(path)
    target = loaded.get("_target_") if isinstance(loaded, DictConfig) else None
    return source_class(str(target), str(path))


def source_class(target: str, where: str) -> type[DatasetSource]:
    """The ``DatasetSource`` subclass ``target`` names (``where``: the file or node that names it)."""
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, DatasetSource)):
        raise DataError(f"{where}: _target_ names {target}, not a DatasetSource subclass")
    return cls


def build_dataset(node: DictConfig) -> DatasetSource:
    """The dataset a ``dataset`` config node describes: every setting its class's constructor takes
    (the shared ones and its own) comes from the node; the loader settings stay with the node."""
    settings = resolved(node, enums_as_values=False)
    target = str(settings["_target_"])
    cls = source_class(target, "dataset")
    parameters = {setting.name for setting in signature_settings(target)}  # ``**common`` followed
    return cls(**{key: value for key, value in settings.items() if key in parameters})


def open_dataset(name: str, root: str | Path, **selection: Any) -> DatasetSource:
    """Dataset ``name`` (a conf/dataset option) at ``root``: for scripts and tests that have no config."""
    return dataset_class(name)(name=name, root=root, **selection)
