"""open_clip models for the CLIP detectors: named checkpoints from the weights dir, named architectures
with random weights (``model.weights=random``), or the ``tiny`` preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg
from open_clip.transformer import VisionTransformer

from anorefine.atomic import write_atomic
from anorefine.errors import AnorefineError
from anorefine.weights import (
    PRETRAINED,
    RANDOM,
    WeightsSource,
    find_weight_file,
    resolve_weights_dir,
    seeded_weights,
)

#: Normalisation of every CLIP model used here (OpenAI's statistics; LAION models were trained with them too).
CLIP_MEAN = tuple(open_clip.OPENAI_DATASET_MEAN)
CLIP_STD = tuple(open_clip.OPENAI_DATASET_STD)

#: ``clip`` value of the random-weight test preset; its results are smoke tests only.
TINY = "tiny"
#: Depth of the tiny preset's towers (vision, text); detectors scale their layer settings to it.
TINY_VISION_LAYERS = 4
TINY_TEXT_LAYERS = 4
#: Width of both of the tiny preset's towers.
TINY_WIDTH = 64
#: Grid side the tiny preset is built at (as if pre-trained there); other sizes interpolate its pos-embed.
TINY_NATIVE_GRID = 4


def checkpoint_name(model: str, pretrained: str) -> str:
    """Path of a named checkpoint relative to the weights dir (what scripts/download.py weights writes)."""
    return f"open_clip/{model}-{pretrained}.pt"


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary sibling, then rename: ``path`` is either absent or complete."""
    return write_atomic(Path(path), lambda temp: torch.save(obj, temp))


def tiny_clip(patch_size: int, seed: int = 0) -> open_clip.CLIP:
    """A small random CLIP (width 64, 4+4 layers, OpenAI tokenizer) seeded deterministically, offline."""
    vision_cfg = {
        "image_size": patch_size * TINY_NATIVE_GRID,
        "patch_size": patch_size,
        "width": TINY_WIDTH,
        "head_width": 32,
        "layers": TINY_VISION_LAYERS,
    }
    text_cfg = {
        "context_length": 77,
        "vocab_size": 49408,
        "width": TINY_WIDTH,
        "heads": 2,
        "layers": TINY_TEXT_LAYERS,
    }
    with seeded_weights(seed):
        return open_clip.CLIP(embed_dim=32, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)


def text_tower(model: str) -> tuple[int, int]:
    """Width and depth of the text tower of ``model`` (an open_clip name or ``tiny``), without building it."""
    if model == TINY:
        return TINY_WIDTH, TINY_TEXT_LAYERS
    config = open_clip.get_model_config(model)
    if config is None:
        raise AnorefineError(f"model.clip={model} is not an open_clip model: see open_clip.list_models()")
    text = CLIPTextCfg(**config["text_cfg"])
    return text.width, text.layers


def clip_weight_file(model: str, pretrained: str, weights_dir: str | Path) -> Path | None:
    """The checkpoint file of a released open_clip model (None for the tiny random one); raises
    ``WeightsError`` naming the file and how to get it when it is missing."""
    if model == TINY:
        return None
    return find_weight_file(weights_dir, [checkpoint_name(model, pretrained)], f"CLIP {model} ({pretrained})")


def configured_clip_weight_file(settings: dict[str, Any], model_key: str) -> Path | None:
    """``clip_weight_file`` of a detector's resolved settings (its model under ``model_key``)."""
    return clip_weight_file(
        settings[model_key], settings["pretrained"], resolve_weights_dir(settings.get("weights_dir"))
    )


class ClipCheckpoint:
    """Mixin of the detectors built on the released open_clip model their ``clip`` setting names:
    ``check_weights`` finds its checkpoint and ``check_settings`` checks the image size against its
    patches before any model is built."""

    #: The patch size of the tiny random CLIP the detector builds for ``clip: tiny`` (tests).
    tiny_patch_size: ClassVar[int] = 16

    @classmethod
    def check_weights(cls, settings: dict[str, Any]) -> None:
        configured_clip_weight_file(settings, "clip")

    def build_clip(
        self, clip: str, pretrained: str, weights_dir: str | None, image_size: int, seed: int,
        weights: WeightsSource,
    ) -> open_clip.CLIP:  # fmt: skip
        """The frozen CLIP the detector runs at ``image_size``² (``load_clip``; the weights directory by
        ``resolve_weights_dir``'s rule, the tiny CLIP with this detector's patch size)."""
        return load_clip(
            clip,
            pretrained,
            resolve_weights_dir(weights_dir),
            image_size,
            self.tiny_patch_size,
            seed,
            weights,
        )

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        clip, size = settings.get("clip"), settings.get("image_size")
        patch = cls.tiny_patch_size if clip == TINY else clip_patch_size(str(clip))
        if patch and size and size % patch:
            below, above = size // patch * patch, (size // patch + 1) * patch
            raise AnorefineError(
                f"model.image_size={size} is not a multiple of the patch size {patch} of model.clip={clip}: "
                f"set model.image_size={below} or {above}"
            )


def clip_patch_size(model: str) -> int | None:
    """The patch size of open_clip model config ``model`` (None for a name open_clip does not know)."""
    config = open_clip.get_model_config(model)
    return None if config is None else int(config["vision_cfg"]["patch_size"])


def named_clip(
    model: str, pretrained: str, weights_dir: str | Path, weights: WeightsSource, seed: int
) -> open_clip.CLIP:
    """A released open_clip model: its weights read from ``weights_dir`` (never downloaded here), or,
    with ``weights=random``, drawn from ``seed`` (no file looked up)."""
    # OpenAI's checkpoints use QuickGELU; open_clip's configs of the same name default to GELU.
    quick_gelu = pretrained == "openai"
    if weights == RANDOM:
        with seeded_weights(seed):
            return open_clip.create_model(model, pretrained=None, force_quick_gelu=quick_gelu)
    path = clip_weight_file(model, pretrained, weights_dir)
    return open_clip.create_model(model, pretrained=str(path), force_quick_gelu=quick_gelu)


def set_image_size(visual: VisionTransformer, image_size: int, mode: str = "bilinear") -> None:
    """Run ``visual`` at ``image_size``² by interpolating its patch position embeddings to the new grid.

    The class-token embedding is kept; ``mode`` follows AnomalyCLIP's code (bilinear, no antialias).
    """
    patch = visual.patch_size[0]
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the CLIP patch size {patch}")
    new_grid = image_size // patch
    old_grid = visual.grid_size[0]
    if new_grid != old_grid:
        cls_pos, grid_pos = visual.positional_embedding[:1], visual.positional_embedding[1:]
        grid_pos = grid_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(new_grid, new_grid), mode=mode, align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1)
        visual.positional_embedding = torch.nn.Parameter(
            torch.cat([cls_pos, grid_pos]), requires_grad=visual.positional_embedding.requires_grad
        )
    visual.grid_size = (new_grid, new_grid)
    visual.image_size = (image_size, image_size)


def load_clip(
    model: str,
    pretrained: str,
    weights_dir: str | Path,
    image_size: int,
    tiny_patch_size: int = 16,
    seed: int = 0,
    weights: WeightsSource = PRETRAINED,
) -> open_clip.CLIP:
    """The frozen, eval-mode CLIP a detector runs at ``image_size``²: named (weights dir, or random
    weights from ``seed``) or ``tiny`` (random from ``seed``)."""
    if model == TINY:
        clip = tiny_clip(tiny_patch_size, seed)
    else:
        clip = named_clip(model, pretrained, weights_dir, weights, seed)
    set_image_size(clip.visual, image_size)
    clip.requires_grad_(False)
    return clip.eval()
