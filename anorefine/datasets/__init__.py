"""Datasets as components: each dataset one module here and one ``conf/dataset/<name>.yaml``.

A dataset class (``anorefine.datasets.base.DatasetSource``) owns its root (checked, generated or
downloaded), its categories and splits, and the facts other stages ask of it by name: AnomalyCLIP's
auxiliary partner, MuSc's mask rule and window sizes, the full category set a published mean covers.
``dataset_class(name)`` finds the class a ``conf/dataset`` option names; nothing else compares names.
"""

from anorefine.datasets.base import DatasetSource, build_dataset, dataset_class, dataset_names, open_dataset

__all__ = ["DatasetSource", "build_dataset", "dataset_class", "dataset_names", "open_dataset"]
