"""The transfer dataset (docs/transfer.md): every defect kind on six textures, generated on first use."""

from __future__ import annotations

from pathlib import Path

from anorefine.datasets.mvtec import LayoutDataset


class TransferDataset(LayoutDataset):
    """``dataset=transfer``: hold one kind out with ``dataset.defect_types=[KIND]``."""

    generated = True

    def root_hint(self) -> str:
        return f"generate it with anorefine.data.ensure_transfer_dataset({self.root}) or set dataset.root"

    def ensure_root(self) -> Path:
        from anorefine.data.transfer import ensure_transfer_dataset  # the generators, on first use

        return ensure_transfer_dataset(self.root, seed=self.generation_seed)
