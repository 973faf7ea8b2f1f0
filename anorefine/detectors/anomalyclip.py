"""AnomalyCLIP (Zhou et al., ICLR 2024) on open_clip: DPAM visual path, object-agnostic learnable prompts."""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from anorefine.detectors.anomalyclip_prompts import PromptShape, read_prompt_file
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.detectors.clip_models import (
    CLIP_MEAN,
    CLIP_STD,
    TINY,
    ClipCheckpoint,
    text_tower,
    torch_save_atomic,
)
from anorefine.detectors.normalization import normalize
from anorefine.errors import AnorefineError
from anorefine.shapes import spatial_size
from anorefine.weights import PRETRAINED, RANDOM, WeightsSource

#: Depth of the towers the layer settings refer to (ViT-L/14 vision, its text encoder).
REFERENCE_DEPTH = (24, 12)


def vv_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """DPAM's V-V self-attention of an attention layer on tokens ``x`` (L,N,D): softmax(v·vᵀ/√d)·v, out-proj.

    Queries and keys are both replaced by the values (the layer's own value projection and heads).
    """
    length, batch, dim = x.shape
    heads = attn.num_heads
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * dim :]
    v = F.linear(x, attn.in_proj_weight[2 * dim :], bias)
    v = v.reshape(length, batch * heads, dim // heads).transpose(0, 1)
    out = F.scaled_dot_product_attention(v, v, v)
    return attn.out_proj(out.transpose(0, 1).reshape(length, batch, dim))


def rescale_layer(layer: int, reference: int, depth: int) -> int:
    """Map a 1-based layer index of a ``reference``-deep tower onto a ``depth``-deep one (ends kept)."""
    return 1 + round((layer - 1) * (depth - 1) / (reference - 1))


def tower_layer(clip: str, layer: int, reference: int, depth: int) -> int:
    """A layer setting given for ViT-L/14's ``reference``-deep tower, on ``clip``'s ``depth``-deep one:
    the tiny preset rescales it, real models take it as is."""
    return rescale_layer(layer, reference, depth) if clip == TINY else layer


def configured_prompt_shape(settings: dict[str, Any]) -> PromptShape:
    """The prompt sizes of a detector built from resolved ``settings``, without building it."""
    width, text_depth = text_tower(settings["clip"])
    depth = tower_layer(settings["clip"], settings["prompt_depth"], REFERENCE_DEPTH[1], text_depth)
    return PromptShape(settings["n_ctx"], depth, settings["prompt_length"], width)


class PromptLearner(nn.Module):
    """Object-agnostic prompts "[X]×n object." / "[X]×n damaged object." plus deep text tokens.

    Learnable: the n context vectors of each prompt and, for text layers 2..depth, ``length`` tokens
    that replace the tokens right after the start token. Token ids and fixed embeddings are
    non-persistent buffers, so the state dict holds only the learnable tensors.
    """

    def __init__(self, clip: open_clip.CLIP, n_ctx: int, depth: int, length: int, seed: int) -> None:
        super().__init__()
        width = clip.ln_final.weight.shape[0]
        self.shape = PromptShape(n_ctx, depth, length, width)
        generator = torch.Generator().manual_seed(seed)

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(0.02 * torch.randn(*shape, generator=generator))

        self.ctx_normal = init(n_ctx, width)
        self.ctx_anomalous = init(n_ctx, width)
        self.deep_prompts = nn.ParameterList([init(length, width) for _ in range(depth - 1)])
        placeholder = " ".join(["X"] * n_ctx)
        tokens = open_clip.tokenize([f"{placeholder} object.", f"{placeholder} damaged object."])
        with torch.no_grad():
            embedding = clip.token_embedding(tokens)
        self.tokens: torch.Tensor
        self.prefix: torch.Tensor
        self.suffix: torch.Tensor
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embedding[:, :1], persistent=False)
        self.register_buffer("suffix", embedding[:, 1 + n_ctx :], persistent=False)

    def forward(self) -> torch.Tensor:
        """Token embeddings (2,77,width) of the [normal, anomalous] prompts."""
        ctx = torch.stack([self.ctx_normal, self.ctx_anomalous]).to(self.prefix.dtype)
        return torch.cat([self.prefix, ctx, self.suffix], dim=1)


class AnomalyClipDetector(ClipCheckpoint, Detector):
    """Zero-shot AnomalyCLIP: patch tokens of the DPAM path against two learned text embeddings.

    ``anomaly_map`` = softmax(cos(patch, [normal, anomalous]) / T)[anomalous] on the patch grid,
    summed over ``feature_layers`` (the official code sums); ``image_score`` = the same softmax on
    the image embedding. The prompts must be trained (``anomalyclip_training``) or loaded
    (``prompt_ckpt``) before the scores mean anything.
    """

    tiny_patch_size = 14  # the tiny test CLIP patches like ViT-L/14

    def __init__(
        self,
        clip: str = "ViT-L-14-336",
        pretrained: str = "openai",
        image_size: int = 518,
        feature_layers: tuple[int, ...] = (24,),
        dpam_start_layer: int = 6,
        n_ctx: int = 12,
        prompt_depth: int = 9,
        prompt_length: int = 4,
        temperature: float = 0.07,
        prompt_ckpt: str | None = None,
        weights_dir: str | None = None,
        weights: WeightsSource = PRETRAINED,
        weights_seed: int = 0,
        prompt_seed: int = 111,
    ) -> None:
        """``prompt_ckpt``: trained prompts to load, ours or the officially released ones
        (``anomalyclip_prompts``); null: the run's ``prepare`` stage trains them
        (``anomalyclip_training.PromptTraining``). ``prompt_seed``: the prompt initialisation (the
        official seed). ``weights=random`` (or ``clip=tiny``): random CLIP weights from
        ``weights_seed``, smoke-only."""
        super().__init__()
        self.clip = self.build_clip(clip, pretrained, weights_dir, image_size, weights_seed, weights)
        self.smoke_only = clip == TINY or weights == RANDOM
        vision_depth = len(self.clip.visual.transformer.resblocks)
        text_depth = len(self.clip.transformer.resblocks)
        feature_layers = tuple(tower_layer(clip, k, REFERENCE_DEPTH[0], vision_depth) for k in feature_layers)
        dpam_start_layer = tower_layer(clip, dpam_start_layer, REFERENCE_DEPTH[0], vision_depth)
        prompt_depth = tower_layer(clip, prompt_depth, REFERENCE_DEPTH[1], text_depth)
        if not feature_layers or not all(1 <= k <= vision_depth for k in feature_layers):
            raise AnorefineError(
                f"model.feature_layers={list(feature_layers)}: {clip} has layers 1..{vision_depth}"
            )
        if not 1 <= dpam_start_layer <= vision_depth + 1:
            raise AnorefineError(
                f"model.dpam_start_layer={dpam_start_layer}: use 1..{vision_depth + 1} for {clip} "
                f"({vision_depth + 1} = no DPAM)"
            )
        if not 1 <= prompt_depth <= text_depth:
            raise AnorefineError(
                f"model.prompt_depth={prompt_depth}: {clip}'s text encoder has {text_depth} layers"
            )
        # what the prompts were trained on: the released weights, or random ones of a seed
        self.clip_name = (clip, pretrained if weights == PRETRAINED else f"{RANDOM} (seed {weights_seed})")
        self.image_size = image_size
        self.feature_layers = tuple(sorted(feature_layers))
        self.dpam_start_layer = dpam_start_layer
        self.temperature = temperature
        self.stride = int(self.clip.visual.patch_size[0])
        # A patch token's own support; V-V attention mixes mostly similar (nearby) tokens.
        self.receptive_field = self.stride
        self.prompt_seed = prompt_seed
        self.prompt_learner = PromptLearner(self.clip, n_ctx, prompt_depth, prompt_length, prompt_seed)
        self.prompt_ckpt = prompt_ckpt
        if prompt_ckpt:
            self.load_prompts(prompt_ckpt)

    @classmethod
    def check_files(cls, settings: dict[str, Any]) -> None:
        """``model.prompt_ckpt``, when set, is a prompt checkpoint that fits the configured prompts."""
        if settings.get("prompt_ckpt"):
            read_prompt_file(settings["prompt_ckpt"], configured_prompt_shape(settings))

    def train(self, mode: bool = True) -> AnomalyClipDetector:
        """Only the prompt learner ever trains; CLIP stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """CLIP-normalised (B,3,S,S) -> image embedding (B,E), patch embeddings per feature layer (B,h·w,E).

        Layers before ``dpam_start_layer`` run as in CLIP. From it on, a second (patch) path adds each
        layer's V-V attention of the original path's tokens and skips the MLPs; the original q-k path
        continues unchanged and gives the image embedding (its class token, projected without
        ``ln_post``, as in the official code). Patch embeddings: ``ln_post`` then projection.
        """
        visual = self.clip.visual
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(x).permute(1, 0, 2)
        patch_path: torch.Tensor | None = None
        tokens: list[torch.Tensor] = []
        for layer, block in enumerate(visual.transformer.resblocks, start=1):
            if layer >= self.dpam_start_layer:
                update = block.ls_1(vv_attention(block.attn, block.ln_1(x)))
                patch_path = (x if patch_path is None else patch_path) + update
            x = block(x)
            if layer in self.feature_layers:
                tokens.append(x if patch_path is None else patch_path)
        image_embedding = x[0] @ visual.proj
        patches = [visual.ln_post(t[1:].transpose(0, 1)) @ visual.proj for t in tokens]
        return image_embedding, patches

    def encode_text(self) -> torch.Tensor:
        """L2-normalised text embeddings (2,E) of the [normal, anomalous] learned prompts.

        Text layer 1 reads the prompt embeddings; layers 2..depth first overwrite the ``length``
        tokens after the start token with that layer's learnable deep tokens.
        """
        clip, learner = self.clip, self.prompt_learner
        x = (learner() + clip.positional_embedding).permute(1, 0, 2)
        for layer, block in enumerate(clip.transformer.resblocks):
            if 1 <= layer <= len(learner.deep_prompts):
                deep = learner.deep_prompts[layer - 1]
                deep = deep.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)
                x = torch.cat([x[:1], deep, x[1 + deep.shape[0] :]])
            x = block(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x.transpose(0, 1))
        x = x[torch.arange(x.shape[0]), learner.tokens.argmax(dim=-1)] @ clip.text_projection
        return F.normalize(x, dim=-1)

    def image_logits(self, image_embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B,2) logits cos(image, [normal, anomalous]) / T."""
        return F.normalize(image_embedding, dim=-1) @ text.T / self.temperature

    def patch_probabilities(self, patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B,h·w,E) patch embeddings -> (B,2,h,w) softmax over [normal, anomalous] on the patch grid."""
        probs = (F.normalize(patches, dim=-1) @ text.T / self.temperature).softmax(dim=-1)
        height, width = self.clip.visual.grid_size
        return probs.transpose(1, 2).reshape(probs.shape[0], 2, height, width)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] at the configured size -> CLIP-normalised input."""
        if spatial_size(images) != (self.image_size, self.image_size):
            raise ValueError(f"AnomalyCLIP expects {self.image_size}² images, got {spatial_size(images)}")
        return normalize(images.float(), CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> DetectorOutput:
        image_embedding, patches = self.encode_image(self.prepare_images(images))
        text = self.encode_text()
        anomaly_map = functools.reduce(
            operator.add, (self.patch_probabilities(p, text)[:, 1:] for p in patches)
        )
        height, width = self.clip.visual.grid_size
        features = torch.cat([F.normalize(p, dim=-1) for p in patches], dim=-1)
        return self.output(
            anomaly_map.float(),
            self.image_logits(image_embedding, text).softmax(dim=-1)[:, 1].float(),
            features.float().transpose(1, 2).unflatten(2, (height, width)),  # no batch size: exports
        )

    def prompt_config(self) -> dict[str, Any]:
        """Everything trained prompts depend on in the model: CLIP, layers, prompt shapes and seed."""
        shape = self.prompt_learner.shape
        return {
            "clip": list(self.clip_name),
            "image_size": self.image_size,
            "feature_layers": list(self.feature_layers),
            "dpam_start_layer": self.dpam_start_layer,
            "temperature": self.temperature,
            "n_ctx": shape.n_ctx,
            "prompt_depth": shape.depth,
            "prompt_length": shape.length if shape.depth > 1 else 0,
            "prompt_seed": self.prompt_seed,
        }

    def save_prompts(self, path: str | Path, config: dict[str, Any], steps: int) -> Path:
        """Atomically write the learnable prompt tensors, with the config they were trained under."""
        state = {k: v.detach().cpu() for k, v in self.prompt_learner.state_dict().items()}
        return torch_save_atomic({"prompt_learner": state, "config": config, "steps": steps}, path)

    def load_prompts(self, path: str | Path) -> dict[str, Any]:
        """Load prompts written by ``save_prompts`` or released by the AnomalyCLIP authors (checked
        key by key); returns the config stored with them (empty for official checkpoints)."""
        prompts = read_prompt_file(path, self.prompt_learner.shape)
        self.prompt_learner.load_state_dict(prompts.state)
        return prompts.config
