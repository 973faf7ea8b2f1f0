"""AnomalyCLIP prompt training (the official recipe) as a Lightning fit: the run's ``prepare`` stage.

``model=anomalyclip`` selects ``prepare=anomalyclip_prompts`` (conf/prepare), an instance of
``PromptTraining``: before any category, it trains the prompts on the auxiliary dataset (or reuses
a checkpoint trained under the same settings) and returns their checkpoint, which the run
hands to the detectors as ``model.prompt_ckpt``. This module imports the detector; the detector knows nothing
of its training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from anorefine import data
from anorefine.datasets import DatasetSource, dataset_class
from anorefine.detectors.anomalyclip import AnomalyClipDetector
from anorefine.detectors.base import RunPreparation
from anorefine.errors import AnorefineError

#: The run's prompt checkpoint, in its run directory.
PROMPT_FILE = "anomalyclip_prompts.pt"

#: ``prepare.aux_dataset``: the evaluated dataset's own partner (``DatasetSource.aux_partner``; the
#: zero-shot protocol trains on the test split of the other benchmark).
AUTO = "auto"


def resolve_aux_dataset(setting: str, target: str) -> str:
    """The dataset (a conf/dataset option) whose test split trains the prompts when evaluating ``target``."""
    if setting != AUTO:
        dataset_class(setting)  # a known dataset, or one line naming the known ones
        return setting
    partner = dataset_class(target).aux_partner
    if partner is None:
        raise AnorefineError(
            f"prepare.aux_dataset=auto knows no auxiliary dataset for dataset={target}: set "
            f"prepare.aux_dataset=mvtec or prepare.aux_dataset=visa (or prepare.aux_dataset={target}, "
            f"knowing the prompts then see the test images), or give trained prompts with "
            f"model.prompt_ckpt=PATH"
        )
    return partner


def focal_loss(
    probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5
) -> torch.Tensor:
    """Focal loss of (B,2,H,W) class probabilities against a (B,H,W) {0,1} mask (official smoothing)."""
    one_hot = torch.stack([1 - target, target], dim=1).clamp(smooth, 1 - smooth)
    pt = (one_hot * probs).sum(dim=1) + smooth
    return (-((1 - pt) ** gamma) * pt.log()).mean()


def dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice (smoothing 1) of (B,H,W) predictions against (B,H,W) targets."""
    intersection = (pred * target).flatten(1).sum(dim=1)
    total = pred.flatten(1).sum(dim=1) + target.flatten(1).sum(dim=1)
    return 1 - ((2 * intersection + 1) / (total + 1)).mean()


def prompt_loss(
    detector: AnomalyClipDetector,
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    map_loss_weight: float = 4.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image CE + w × Σ_layers (focal + dice(anomalous, gt) + dice(normal, 1 − gt)) on upsampled maps."""
    with torch.no_grad():
        image_embedding, patches = detector.encode_image(detector.prepare_images(images))
    text = detector.encode_text()
    image_loss = F.cross_entropy(detector.image_logits(image_embedding, text).float(), labels.long())
    gt = (masks[:, 0] > 0.5).float()
    map_loss = image_loss.new_zeros(())
    for patch in patches:
        probs = detector.patch_probabilities(patch, text)
        probs = F.interpolate(probs, size=gt.shape[-2:], mode="bilinear", align_corners=False).float()
        map_loss = (
            map_loss + focal_loss(probs, gt) + dice_loss(probs[:, 1], gt) + dice_loss(probs[:, 0], 1 - gt)
        )
    loss = image_loss + map_loss_weight * map_loss
    return loss, {"image_loss": image_loss.detach(), "map_loss": map_loss.detach()}


class PromptTrainingModule(L.LightningModule):
    """Trains only ``detector.prompt_learner`` (Adam, betas (0.5, 0.999)) on auxiliary test images."""

    def __init__(self, detector: AnomalyClipDetector, lr: float = 1e-3, map_loss_weight: float = 4.0) -> None:
        super().__init__()
        self.detector = detector
        self.lr, self.map_loss_weight = lr, map_loss_weight

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.detector.prompt_learner.parameters(), lr=self.lr, betas=(0.5, 0.999))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, masks, labels = batch["image"], batch["mask"], batch["label"]
        loss, parts = prompt_loss(self.detector, images, masks, labels, self.map_loss_weight)
        size = len(batch["image"])
        self.log("prompt/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"prompt/{k}": v for k, v in parts.items()}, batch_size=size)
        return loss


class PromptTraining(RunPreparation):
    """The official prompt-training recipe (Adam lr 1e-3, batch 8, 15 epochs, seed 111) on the test
    split of an auxiliary dataset, run once per run before any category (``prepare`` in train.yaml)."""

    sets = "prompt_ckpt"

    def __init__(
        self,
        aux_dataset: str = AUTO,
        aux_roots: dict[str, str] | None = None,
        epochs: int = 15,
        max_steps: int | None = None,
        batch_size: int = 8,
        lr: float = 1e-3,
        map_loss_weight: float = 4.0,
        seed: int = 111,
    ) -> None:
        """``aux_dataset``: ``auto`` or a conf/dataset option; ``aux_roots``: dataset -> folder;
        ``max_steps`` caps training (smoke tests)."""
        self.aux_dataset, self.aux_roots = aux_dataset, dict(aux_roots or {})
        self.epochs, self.max_steps, self.batch_size = epochs, max_steps, batch_size
        self.lr, self.map_loss_weight, self.seed = lr, map_loss_weight, seed

    def recipe(self) -> dict[str, Any]:
        """The settings trained prompts depend on (stored with them, compared on reuse)."""
        return {
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "map_loss_weight": self.map_loss_weight,
            "seed": self.seed,
        }

    def train_or_load(
        self,
        detector: AnomalyClipDetector,
        aux_loader: DataLoader | None,
        ckpt_path: str | Path,
        make_trainer: Callable[..., L.Trainer],
        provenance: dict[str, Any] | None = None,
    ) -> Path:
        """Give ``detector`` trained prompts once per run; returns the prompt checkpoint it now holds.

        ``model.prompt_ckpt`` (already loaded by the detector) wins; else a checkpoint at ``ckpt_path``
        trained under the same config (the detector's ``prompt_config()``, this recipe and
        ``provenance``, e.g. the auxiliary data) is loaded; else the prompts are trained on
        ``aux_loader`` with ``make_trainer`` and written atomically to ``ckpt_path``.
        """
        if detector.prompt_ckpt:
            return Path(detector.prompt_ckpt)
        ckpt_path = Path(ckpt_path)
        config = {**detector.prompt_config(), "training": self.recipe(), **(provenance or {})}
        if ckpt_path.is_file() and detector.load_prompts(ckpt_path) == config:
            return ckpt_path
        if aux_loader is None:
            raise AnorefineError(f"no prompt checkpoint for this config at {ckpt_path} and no auxiliary data")
        L.seed_everything(self.seed, verbose=False)
        trainer = make_trainer(
            purpose="fit",
            max_epochs=self.epochs,
            max_steps=-1 if self.max_steps is None else self.max_steps,
        )
        trainer.fit(PromptTrainingModule(detector, self.lr, self.map_loss_weight), aux_loader)
        return detector.save_prompts(ckpt_path, config, steps=trainer.global_step)

    def aux_loader(self, detector: AnomalyClipDetector, aux: DatasetSource, num_workers: int) -> DataLoader:
        """Shuffled batches of every test image of every category of the auxiliary dataset."""
        records = [r for c in aux.list_categories() for r in aux.records(c, "test")]
        return DataLoader(
            data.AnomalyImageDataset(records, image_size=detector.image_size),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def prepare(
        self, model: dict[str, Any], dataset: DatasetSource, num_workers: int, run_dir: Path,
        make_trainer: Callable[..., L.Trainer],
    ) -> Path:  # fmt: skip
        """Train (or reuse) the run's prompts in ``run_dir`` on ``dataset``'s auxiliary partner; returns
        their checkpoint. A given ``model.prompt_ckpt`` is returned as is."""
        if model.get("prompt_ckpt"):
            return Path(model["prompt_ckpt"])
        detector = AnomalyClipDetector(**{k: v for k, v in model.items() if k not in ("_target_", "name")})
        kind = resolve_aux_dataset(self.aux_dataset, dataset.name)
        root = dataset.root if kind == dataset.name else self.aux_roots.get(kind)
        if root is None:
            raise AnorefineError(f"no folder for auxiliary dataset {kind}: set prepare.aux_roots.{kind}=DIR")
        aux = dataset_class(kind)(kind, root, generation_seed=dataset.generation_seed)
        aux.ensure_root()  # a generated partner (demo_aux) is written on first use
        loader = self.aux_loader(detector, aux, num_workers)
        provenance = {"aux": {"dataset": kind, "root": str(aux.root)}}
        return self.train_or_load(detector, loader, run_dir / PROMPT_FILE, make_trainer, provenance)
