"""AnomalyCLIP prompt training (the official recipe) as a Lightning fit, and the run's train-or-load step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from anorefine import data
from anorefine.detectors.anomalyclip import AnomalyClipDetector
from anorefine.errors import AnorefineError

#: A second demo dataset, generated with another seed: the demo's partner, so that prompts trained
#: for a demo run never see the demo's test images.
DEMO_AUX = "demo_aux"
#: ``aux_dataset: auto``: the zero-shot protocol trains on the test split of the other benchmark.
AUX_PARTNER = {"mvtec": "visa", "visa": "mvtec", "demo": DEMO_AUX}
#: The run's prompt checkpoint, in its run directory.
PROMPT_FILE = "anomalyclip_prompts.pt"


def resolve_aux_dataset(setting: str, target: str) -> str:
    """The dataset kind whose test split trains the prompts when evaluating ``target``."""
    if setting != "auto":
        return setting
    if target not in AUX_PARTNER:
        raise AnorefineError(
            f"model.aux_dataset=auto knows no auxiliary dataset for dataset={target}: set "
            f"model.aux_dataset to mvtec or visa (or {target}, knowing prompts then see the test images), "
            f"or give trained prompts with model.prompt_ckpt=PATH"
        )
    return AUX_PARTNER[target]


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
    detector: AnomalyClipDetector, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
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
    loss = image_loss + detector.prompt_training.map_loss_weight * map_loss
    return loss, {"image_loss": image_loss.detach(), "map_loss": map_loss.detach()}


class PromptTrainingModule(L.LightningModule):
    """Trains only ``detector.prompt_learner`` (Adam, betas (0.5, 0.999)) on auxiliary test images."""

    def __init__(self, detector: AnomalyClipDetector) -> None:
        super().__init__()
        self.detector = detector

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr = self.detector.prompt_training.lr
        return torch.optim.Adam(self.detector.prompt_learner.parameters(), lr=lr, betas=(0.5, 0.999))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = prompt_loss(self.detector, batch["image"], batch["mask"], batch["label"])
        size = len(batch["image"])
        self.log("prompt/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"prompt/{k}": v for k, v in parts.items()}, batch_size=size)
        return loss


def train_or_load_prompts(
    detector: AnomalyClipDetector,
    aux_loader: DataLoader | None,
    ckpt_path: str | Path,
    make_trainer: Callable[..., L.Trainer],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Give ``detector`` trained prompts once per run; returns the prompt checkpoint it now holds.

    ``model.prompt_ckpt`` (already loaded by the detector) wins; else a checkpoint at ``ckpt_path``
    trained under the same config (``detector.prompt_config()`` plus ``provenance``, e.g. the
    auxiliary data) is loaded; else the prompts are trained on ``aux_loader`` with
    ``make_trainer(**overrides)`` and written atomically to ``ckpt_path``.
    """
    if detector.prompt_ckpt:
        return Path(detector.prompt_ckpt)
    ckpt_path = Path(ckpt_path)
    config = {**detector.prompt_config(), **(provenance or {})}
    if ckpt_path.is_file() and detector.load_prompts(ckpt_path) == config:
        return ckpt_path
    if aux_loader is None:
        raise AnorefineError(f"no prompt checkpoint for this config at {ckpt_path} and no auxiliary data")
    settings = detector.prompt_training
    L.seed_everything(settings.seed, verbose=False)
    trainer = make_trainer(
        max_epochs=settings.epochs,
        max_steps=-1 if settings.max_steps is None else settings.max_steps,
        enable_checkpointing=False,
    )
    trainer.fit(PromptTrainingModule(detector), aux_loader)
    return detector.save_prompts(ckpt_path, config, steps=trainer.global_step)


def aux_test_loader(detector: AnomalyClipDetector, kind: str, root: Path, num_workers: int) -> DataLoader:
    """Shuffled batches of every test image of every category of the auxiliary dataset."""
    settings = detector.prompt_training
    records = [r for c in data.list_categories(kind, root) for r in data.read_split(kind, root, c, "test")]
    return DataLoader(
        data.AnomalyImageDataset(records, image_size=detector.image_size),
        batch_size=settings.batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(settings.seed),
    )


def prepare_prompts(cfg: DictConfig, run_dir: Path, make_trainer: Callable[..., L.Trainer]) -> DictConfig:
    """Train (or reuse) the run's prompts in ``run_dir``; returns ``cfg`` with ``model.prompt_ckpt`` set.

    A given ``model.prompt_ckpt`` is used as is.
    """
    if cfg.model.prompt_ckpt:
        return cfg
    params = OmegaConf.to_container(cfg.model, resolve=True)
    detector = AnomalyClipDetector(**{k: v for k, v in params.items() if k not in ("_target_", "name")})
    settings = detector.prompt_training
    kind = resolve_aux_dataset(settings.aux_dataset, cfg.dataset.name)
    root = cfg.dataset.root if kind == cfg.dataset.name else settings.aux_roots.get(kind)
    if root is None:
        raise AnorefineError(f"no folder for auxiliary dataset {kind}: set model.aux_roots.{kind}=DIR")
    root = Path(root).expanduser()
    if kind in ("demo", DEMO_AUX):
        seed = cfg.dataset.get("generation_seed", 0) + (kind == DEMO_AUX)
        data.ensure_demo_dataset(root, seed=seed)
    reader = "demo" if kind == DEMO_AUX else kind
    loader = aux_test_loader(detector, reader, root, cfg.dataset.num_workers)
    provenance = {"aux": {"dataset": kind, "root": str(root)}}
    path = train_or_load_prompts(detector, loader, run_dir / PROMPT_FILE, make_trainer, provenance)
    cfg = copy.deepcopy(cfg)
    cfg.model.prompt_ckpt = str(path)
    return cfg
