"""AnomalyCLIP prompt checkpoints (``model.prompt_ckpt``): read, checked and mapped onto our keys.

Two formats load: the files the run's prompt training writes (``anomalyclip_training``:
``{"prompt_learner": PromptLearner state, "config": ..., "steps": ...}``) and the officially released
ones (github zqhang/AnomalyCLIP, ``checkpoints/9_12_4_multiscale*/epoch_15.pth``; its ``train.py``
saves ``{"prompt_learner": AnomalyCLIP_PromptLearner.state_dict()}``). Reading a file checks every
key and shape against the configured prompt learner, so ``plan`` can reject a bad file before any
model is built. This module imports no detector.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anorefine.errors import AnorefineError

#: What every message about a bad prompt checkpoint ends with.
FIX = (
    "use an official epoch_15.pth or a file anorefine wrote (docs/clip_detectors.md, Released prompts), "
    "or set model.prompt_ckpt=null to train the prompts"
)


@dataclass(frozen=True)
class PromptShape:
    """Sizes of a prompt learner's learnable tensors: ``n_ctx`` context vectors per prompt, ``depth − 1``
    deep tensors of ``length`` tokens, all of the text tower's ``width``."""

    n_ctx: int
    depth: int
    length: int
    width: int


#: A learnable tensor in a file: its key there (``{i}`` numbers the deep tensors), our key, its shape there.
Row = tuple[str, str, Callable[[PromptShape], tuple[int, ...]]]


@dataclass(frozen=True)
class PromptFormat:
    """The layout of a prompt checkpoint's ``prompt_learner`` state dict."""

    name: str
    rows: tuple[Row, ...]
    #: Key prefixes present in such files but not loaded.
    unused: tuple[str, ...] = ()

    def layout(self, shape: PromptShape) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Every learnable key of a file of ``shape`` -> (our key, its shape in the file)."""
        layout = {}
        for theirs, ours, file_shape in self.rows:
            indices = range(shape.depth - 1) if "{i}" in theirs else [None]
            for i in indices:
                layout[theirs.format(i=i)] = (ours.format(i=i), file_shape(shape))
        return layout

    def deep_prefix(self) -> str:
        """The key prefix of the deep tensors (``<prefix><i>``)."""
        return next(theirs.split("{i}")[0] for theirs, _, _ in self.rows if "{i}" in theirs)


#: The files ``AnomalyClipDetector.save_prompts`` writes: our keys and shapes.
ANOREFINE = PromptFormat(
    "anorefine",
    (
        ("ctx_normal", "ctx_normal", lambda s: (s.n_ctx, s.width)),
        ("ctx_anomalous", "ctx_anomalous", lambda s: (s.n_ctx, s.width)),
        ("deep_prompts.{i}", "deep_prompts.{i}", lambda s: (s.length, s.width)),
    ),
)

#: The official prompt learner's keys (prompt_ensemble.py, ``AnomalyCLIP_PromptLearner``) mapped onto
#: ours. We map its state dict rather than use the module, which is built on the authors' own CLIP
#: fork, not on open_clip. Its context tensors are (classes=1, templates=1, n_ctx, width).
OFFICIAL = PromptFormat(
    "official AnomalyCLIP",
    (
        ("ctx_pos", "ctx_normal", lambda s: (1, 1, s.n_ctx, s.width)),
        ("ctx_neg", "ctx_anomalous", lambda s: (1, 1, s.n_ctx, s.width)),
        ("compound_prompts_text.{i}", "deep_prompts.{i}", lambda s: (s.length, s.width)),
    ),
    # depth − 1 Linear(width, 896) its forward never calls; token embeddings and ids of the two
    # prompts, recomputed from our CLIP.
    unused=("compound_prompt_projections.", "token_prefix_", "token_suffix_", "tokenized_prompts_"),
)


@dataclass(frozen=True)
class PromptFile:
    """A checked prompt checkpoint: the learnable tensors under our keys (float32), the config stored
    with them (empty for official files) and the format it was read as."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    format: PromptFormat


def bad_file(path: Path, problem: str) -> AnorefineError:
    """The one-line error for a file that is not a usable prompt checkpoint."""
    return AnorefineError(f"model.prompt_ckpt={path}: {problem}; {FIX}")


def load_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's ``prompt_learner`` state dict and its stored config."""
    if not path.is_file():
        raise bad_file(path, "no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for foreign files
        raise bad_file(path, f"not a torch checkpoint ({type(error).__name__})") from error
    state = payload.get("prompt_learner") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise bad_file(path, f"no 'prompt_learner' state dict in it (found {found})")
    config = payload.get("config", {})
    return state, config if isinstance(config, dict) else {}


def shape_of(state: dict[str, Any], fmt: PromptFormat, path: Path, expected: PromptShape) -> PromptShape:
    """The prompt sizes a file of ``fmt`` holds, from its first context tensor and its deep tensors."""
    ctx_key = fmt.rows[0][0]
    ctx, wanted = state.get(ctx_key), fmt.layout(expected)[ctx_key][1]
    if not isinstance(ctx, torch.Tensor):
        raise bad_file(path, f"missing key {ctx_key!r} (expected shape {wanted})")
    if ctx.ndim != len(wanted):
        raise bad_file(path, f"key {ctx_key!r} has shape {tuple(ctx.shape)}, expected {wanted}")
    pattern = re.compile(re.escape(fmt.deep_prefix()) + r"\d+")
    deep = [key for key in state if pattern.fullmatch(key)]
    first = state.get(f"{fmt.deep_prefix()}0")
    length = first.shape[0] if isinstance(first, torch.Tensor) and first.ndim else 0
    return PromptShape(ctx.shape[-2], len(deep) + 1, length, ctx.shape[-1])


def check_settings(found: PromptShape, expected: PromptShape, path: Path) -> None:
    """The file's prompt sizes against the configured ones: one line naming the setting to change."""
    if found.width != expected.width:
        raise AnorefineError(
            f"model.prompt_ckpt={path}: its prompts are {found.width}-wide, model.clip's text tower is "
            f"{expected.width}-wide: use the CLIP they were trained on (official: model.clip=ViT-L-14-336 "
            "model.pretrained=openai)"
        )
    if found.n_ctx != expected.n_ctx:
        raise AnorefineError(
            f"model.prompt_ckpt={path}: it holds {found.n_ctx} context vectors per prompt, model.n_ctx "
            f"gives {expected.n_ctx}: set model.n_ctx={found.n_ctx}"
        )
    if found.depth != expected.depth:
        raise AnorefineError(
            f"model.prompt_ckpt={path}: it holds {found.depth - 1} deep prompt tensors (depth "
            f"{found.depth}), model.prompt_depth gives depth {expected.depth}: set model.prompt_depth to "
            "the depth it was trained with (the released checkpoints: 9)"
        )
    if found.depth > 1 and found.length != expected.length:
        raise AnorefineError(
            f"model.prompt_ckpt={path}: its deep prompts have {found.length} tokens, model.prompt_length "
            f"gives {expected.length}: set model.prompt_length={found.length}"
        )


def read_prompt_file(path: str | Path, expected: PromptShape) -> PromptFile:
    """Read a prompt checkpoint of either format and check it fits prompts of ``expected`` sizes.

    Every error is an ``AnorefineError`` naming the file and, for a bad tensor, its key with the
    expected and the found shape.
    """
    path = Path(path).expanduser()
    state, config = load_state(path)
    official = tuple(theirs.split("{i}")[0] for theirs, _, _ in OFFICIAL.rows) + OFFICIAL.unused
    fmt = OFFICIAL if any(str(key).startswith(official) for key in state) else ANOREFINE
    check_settings(shape_of(state, fmt, path, expected), expected, path)
    layout = fmt.layout(expected)
    for key in state:
        if key not in layout and not key.startswith(fmt.unused):
            raise bad_file(path, f"unexpected key {key!r} for an {fmt.name} prompt learner")
    loaded = {}
    for key, (ours, shape) in layout.items():
        tensor = state.get(key)
        if not isinstance(tensor, torch.Tensor):
            raise bad_file(path, f"missing key {key!r} (expected shape {shape})")
        if tuple(tensor.shape) != shape:
            raise bad_file(path, f"key {key!r} has shape {tuple(tensor.shape)}, expected {shape}")
        if not tensor.is_floating_point():
            raise bad_file(path, f"key {key!r} holds {tensor.dtype}, expected floating point")
        loaded[ours] = tensor.float().reshape(shape[-2:])  # ours are 2-D: the file's last two dims
    return PromptFile(loaded, config if fmt is ANOREFINE else {}, fmt)
