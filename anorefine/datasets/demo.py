"""The built-in demo (texture photographs with painted defects), generated on first use, and its
second draw with another seed: AnomalyCLIP's auxiliary data for a demo run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from anorefine.data.textures import PHOTO_TEXTURES
from anorefine.datasets.mvtec import LayoutDataset


class DemoDataset(LayoutDataset):
    """``dataset=demo``: generated into its root on first use (``generation_seed``)."""

    aux_partner: ClassVar[str | None] = "demo_aux"
    generated = True
    official_categories = PHOTO_TEXTURES  # the demo's categories
    #: Added to ``generation_seed``: a second draw of the same generator is another dataset.
    seed_offset = 0

    def root_hint(self) -> str:
        return f"generate it with anorefine.data.ensure_demo_dataset({self.root}) or set dataset.root"

    def ensure_root(self) -> Path:
        from anorefine.data.demo import ensure_demo_dataset  # the generators, on first use

        return ensure_demo_dataset(self.root, seed=self.generation_seed + self.seed_offset)


class DemoAuxDataset(DemoDataset):
    """``demo_aux``: the demo drawn with ``generation_seed + 1``, so that prompts trained for a demo
    run never see the demo's test images."""

    aux_partner = None
    seed_offset = 1
