"""MuSc (Li et al., ICLR 2024): zero-shot, text-free mutual scoring of the unlabeled test images.

Every test image is scored against the other unlabeled images of its reference set (official code
xrli-U/MuSc; the facts are in docs/design.md):

- features of several layers: ViT blocks (raw residual-stream tokens after the block, CLS dropped)
  or the stages of a timm CNN (each stage one "layer", its own channel count);
- **LNAMD** for each r of ``r_list``: per-image LayerNorm over (C,H,W) without affine parameters, r×r
  mean aggregation with zero padding that counts in the mean, L2 normalisation of each patch (CNN
  stages are resized bilinearly to the finest grid first);
- **MSM**: each patch's nearest-patch distance to every other reference image; the patch score is the
  mean of those N−1 distances whose rank lies in ``interval`` (published [0, 0.3): the lowest 30%);
  mean over layers, then over r;
- the map is upsampled bilinearly with ``align_corners=True`` and never blurred (``BaselineBlur`` sigma 0);
- image score = the map's maximum, re-scored by **RsCIN** with the image embeddings (the projected,
  normalised CLS token; a CNN's pooled deepest stage) over the whole reference set.

The detector is *transductive*: the curriculum shows it the category's reference images first
(``set_reference``). ``reference=category`` (published) uses all of them; ``reference=stream`` is the
mass-production setting PGT assumes: an image is scored against the images that arrived before it and
its own group only (the curriculum grows the reference group by group, and scores once fixed are
kept). Images outside the reference (PGT's synthetic ones) are scored against all reference images.
``subsets=K`` splits a category reference into K subsets scored on their own (MSM and RsCIN), each
folder (``good`` and every defect type) shuffled and dealt round the subsets as the official
``divide_num`` does.
"""

from __future__ import annotations

import hashlib
import logging
import random
from typing import Any, Literal

import torch
import torch.nn.functional as F

from anorefine.detectors.backbones import backbone_weight_file, detector_feature_extractor
from anorefine.detectors.base import BaselineBlur, Detector, DetectorOutput
from anorefine.detectors.clip_models import CLIP_MEAN, CLIP_STD, TINY, configured_clip_weight_file, load_clip
from anorefine.detectors.cnn import stage_layers
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from anorefine.errors import AnorefineError
from anorefine.progress import ProgressLog
from anorefine.shapes import spatial_size
from anorefine.weights import PRETRAINED, RANDOM, WeightsSource, resolve_weights_dir

log = logging.getLogger(__name__)
#: Where the features come from: a timm CNN, an open_clip ViT, or a timm ViT (DINO, DINOv2).
Family = Literal["cnn", "open_clip", "timm_vit"]
#: ``category``: every other test image of the category; ``stream``: earlier images and the own group.
Reference = Literal["category", "stream"]
#: The dtype of MSM's matmuls (the nearest-patch reduction stays fp32): bf16/fp16 halve a GPU's time.
MatmulDtype = Literal["float32", "bfloat16", "float16"]
#: The published layers: blocks 5, 11, 17, 23 of a 24-block ViT, 2, 5, 8, 11 of a 12-block one.
VIT_BLOCKS = {24: (5, 11, 17, 23), 12: (2, 5, 8, 11)}
MIN_REFERENCE = 5
#: On a CPU, the most similarities one MSM matmul writes: 2^20 (4 MiB in fp32) stays in cache, where
#: 16 images of 32×32 patches (64 MiB, past glibc's mmap threshold) were page-faulted afresh on every
#: block and made MSM 2.4–3.9× slower (docs/clip_detectors.md, "Where MuSc's time goes under PGT").
CPU_BLOCK_SIMILARITIES = 1 << 20
#: The seed of the official ``divide_num`` split (``random.seed(42)`` in its datasets).
SUBSET_SEED = 42


def lnamd(features: torch.Tensor, r: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,H,W): LayerNorm over (C,H,W) without affine parameters, r×r mean with zero
    padding (the zeros count), then each patch L2-normalised over C."""
    x = F.layer_norm(features.float(), features.shape[1:])
    if r > 1:
        x = F.avg_pool2d(x, r, stride=1, padding=(r - 1) // 2, count_include_pad=True)
    return F.normalize(x, dim=1)


def nearest_distances(query: torch.Tensor, references: torch.Tensor, block_size: int) -> torch.Tensor:
    """(L,C) unit patches of one image, (M,L',C) unit patches of M images -> (L,M) distance of each
    query patch to its nearest patch in each reference image, ``block_size`` images at a time (on a
    CPU at most ``CPU_BLOCK_SIMILARITIES`` similarities a block).

    For unit vectors |a−b|² = 2 − 2a·b, so the nearest patch is the largest dot product: one matmul
    per block, in the reference's dtype (bf16/fp16 on a GPU), the reduction in fp32.
    """
    if references.device.type == "cpu":
        per_image = query.shape[0] * references.shape[1]
        block_size = max(1, min(block_size, CPU_BLOCK_SIMILARITIES // per_image))
    out = []
    for start in range(0, references.shape[0], block_size):
        chunk = references[start : start + block_size]
        sims = query.to(chunk.dtype) @ chunk.reshape(-1, chunk.shape[-1]).T  # (L, m*L')
        best = sims.view(query.shape[0], chunk.shape[0], chunk.shape[1]).amax(-1).float()
        out.append((2.0 - 2.0 * best).clamp_min(0.0).sqrt())
    return torch.cat(out, dim=1)


def interval_mean(distances: torch.Tensor, interval: tuple[float, float]) -> torch.Tensor:
    """(L,M) -> (L,): per patch, the mean of its sorted distances ranked in [lo·M, hi·M) (official)."""
    count = distances.shape[1]
    low, high = int(count * interval[0]), int(count * interval[1])
    if high <= low:
        raise AnorefineError(
            f"model.interval={list(interval)} keeps none of {count} reference distances: MuSc needs at least "
            f"{MIN_REFERENCE} reference images (or a wider interval)"
        )
    ranked = distances.sort(dim=1).values
    return ranked[:, low:high].mean(dim=1)


def mutual_scores(
    query: torch.Tensor,
    references: torch.Tensor,
    interval: tuple[float, float],
    block_size: int,
) -> torch.Tensor:
    """(L,C) patches of one image against (M,L',C) other images: (L,) MSM patch scores."""
    return interval_mean(nearest_distances(query, references, block_size), interval)


def rscin(scores: torch.Tensor, embeddings: torch.Tensor, k_list: tuple[int, ...]) -> torch.Tensor:
    """RsCIN: (N,) image scores min-max normalised, then for each k the mean over each image's k most
    similar images (by embedding dot product, the image itself included, similarity-weighted);
    the mean over k. ``k_list`` containing 0 leaves the scores as they are (official)."""
    if not k_list or 0 in k_list:
        return scores
    spread = (scores.max() - scores.min()).clamp_min(1e-12)
    normalised = (scores - scores.min()) / spread
    similarity = (embeddings @ embeddings.T).to(normalised.dtype)
    out = []
    for k in k_list:
        top = similarity.topk(min(k, len(scores)), dim=1)
        weights = torch.zeros_like(similarity).scatter(1, top.indices, top.values)
        out.append((weights / weights.sum(1, keepdim=True)) @ normalised)
    return torch.stack(out).mean(0)


def image_key(image: torch.Tensor) -> str:
    """A stable identity of an image tensor (its exact values)."""
    return hashlib.sha1(image.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class MuscDetector(Detector):
    """MuSc behind the detector contract: zero-shot, training-free, transductive (see module doc)."""

    transductive = True
    baseline = BaselineBlur(sigma=0.0, align_corners=True)

    @classmethod
    def check_weights(cls, settings: dict[str, Any]) -> None:
        if settings["family"] == "cnn":
            backbone_weight_file(settings["backbone"], resolve_weights_dir(settings.get("weights_dir")))
        elif settings["family"] == "open_clip":
            configured_clip_weight_file(settings, "backbone")

    def __init__(
        self,
        family: Family = "cnn",
        backbone: str = "efficientnet_lite0",
        pretrained: str = "openai",
        layers: list[str] | None = None,
        blocks: list[int] | None = None,
        image_size: int = 256,
        r_list: tuple[int, ...] = (1, 3, 5),
        interval: tuple[float, float] = (0.0, 0.3),
        k_list: tuple[int, ...] = (1, 2, 3),
        reference: Reference = "category",
        subsets: int = 1,
        block_size: int = 16,
        matmul_dtype: MatmulDtype = "float32",
        reference_cache_mb: float = 4096,
        weights_dir: str | None = None,
        weights: WeightsSource = PRETRAINED,
        weights_seed: int = 0,
    ) -> None:
        """``layers``: CNN stages (null: strides 8 and 16); ``blocks``: ViT blocks, 1-based as in the
        paper's configs (null: the published ones for the depth); ``pretrained``: the open_clip tag;
        ``weights=random`` (or the tiny CLIP): random weights from ``weights_seed``, smoke-only;
        ``reference_cache_mb``: the most memory the reference patches of every r may keep between
        queries (beyond it only one r's are kept: N·h·w·ΣC values)."""
        super().__init__()
        self.family, self.image_size, self.reference = family, image_size, reference
        self.stream_reference = reference == "stream"
        if subsets < 1 or (subsets > 1 and self.stream_reference):
            raise AnorefineError(
                f"model.subsets={subsets}: use 1, or K > 1 with model.reference=category "
                "(a stream has no subsets)"
            )
        self.subsets = subsets
        self.r_list, self.k_list = tuple(r_list), tuple(k_list)
        self.interval = (float(interval[0]), float(interval[1]))
        self.block_size, self.matmul_dtype = block_size, getattr(torch, matmul_dtype)
        self.reference_cache_mb = reference_cache_mb
        self.smoke_only = (family == "open_clip" and backbone == TINY) or weights == RANDOM
        if family == "cnn":
            names = list(layers) if layers else stage_layers(backbone, (8, 16))
            self.extractor = detector_feature_extractor(
                backbone, names, resolve_weights_dir(weights_dir), weights, weights_seed
            )
            self.stride = int(self.extractor.feature_extractor.feature_info.reduction()[0])
        elif family == "open_clip":
            self.clip = load_clip(
                backbone, pretrained, resolve_weights_dir(weights_dir), image_size, 14, weights_seed, weights
            )
            depth = len(self.clip.visual.transformer.resblocks)
            self.blocks = self._blocks(blocks, depth)
            self.stride = int(self.clip.visual.patch_size[0])
        else:
            import timm

            vit: Any = timm.create_model(backbone, pretrained=False, img_size=image_size, num_classes=0)
            self.vit = vit.requires_grad_(False).eval()
            self.blocks = self._blocks(blocks, len(vit.blocks))
            self.stride = int(vit.patch_embed.patch_size[0])
        self.receptive_field = 3 * self.stride  # the widest r×r aggregation of one patch's neighbours
        self._features: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}  # key -> layers, embedding
        self._maps: dict[str, torch.Tensor] = {}  # key -> (1,h,w) map of a scored reference image
        self._scores: dict[str, torch.Tensor] = {}  # key -> its image score (RsCIN when first scored)
        self._reference: list[str] = []
        self._patches: tuple[list[str], dict[int, list[torch.Tensor]]] = ([], {})  # keys -> r -> patches
        self.progress_label = "MuSc mutual scoring"

    def setup_category(self, category: str) -> None:
        """Name the category in the progress lines of its mutual scoring."""
        self.progress_label = f"{category}: MuSc mutual scoring"

    @staticmethod
    def _blocks(blocks: list[int] | None, depth: int) -> tuple[int, ...]:
        chosen = (
            tuple(blocks)
            if blocks
            else VIT_BLOCKS.get(depth, tuple(round(depth * f) - 1 for f in (0.25, 0.5, 0.75, 1.0)))
        )
        if not all(0 <= b < depth for b in chosen):
            raise AnorefineError(f"model.blocks={list(chosen)}: the ViT has blocks 0..{depth - 1}")
        return chosen

    # -- features ---------------------------------------------------------------------------------

    @torch.no_grad()
    def layer_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B,3,S,S) in [0,1] -> per layer (B,C,h,w) raw features, and (B,D) unit image embeddings."""
        if self.family == "cnn":
            named = self.extractor(normalize(images.float(), IMAGENET_MEAN, IMAGENET_STD))
            layers = list(named.values())
            return layers, F.normalize(layers[-1].mean(dim=(2, 3)), dim=1)
        if self.family == "open_clip":
            return self._clip_features(images)
        x = normalize(images.float(), IMAGENET_MEAN, IMAGENET_STD)
        tokens = self.vit.forward_intermediates(
            x, indices=list(self.blocks), norm=False, intermediates_only=True
        )
        embedding = self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)
        return [t.float() for t in tokens], F.normalize(embedding.float(), dim=1)

    def _clip_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        visual = self.clip.visual
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            visual.transformer.resblocks[b].register_forward_hook(
                lambda module, args, out, b=b: captured.__setitem__(b, out)
            )
            for b in self.blocks
        ]
        try:
            embedding = self.clip.encode_image(normalize(images.float(), CLIP_MEAN, CLIP_STD))
        finally:
            for hook in hooks:
                hook.remove()
        batch, (height, width) = images.shape[0], visual.grid_size
        layers = []
        for b in self.blocks:
            tokens = captured[b]
            if tokens.shape[0] != batch:  # (L+1, B, C): sequence first
                tokens = tokens.transpose(0, 1)
            layers.append(tokens[:, 1:].transpose(1, 2).reshape(batch, -1, height, width).float())
        return layers, F.normalize(embedding.float(), dim=1)

    def aggregated(self, layers: list[torch.Tensor], r: int) -> list[torch.Tensor]:
        """LNAMD of every layer at r, each (N, h·w, C) on the finest layer's grid."""
        grid = layers[0].shape[-2:]
        out = []
        for feature in layers:
            x = lnamd(feature, r)
            if x.shape[-2:] != grid:
                x = F.normalize(F.interpolate(x, size=grid, mode="bilinear", align_corners=False), dim=1)
            out.append(x.flatten(2).transpose(1, 2))
        return out

    # -- the transductive contract ------------------------------------------------------------------

    def features_of(self, images: torch.Tensor) -> list[str]:
        """Extract (and keep) the features of images not seen before; returns their keys."""
        keys = [image_key(image) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self._features]
        for start in range(0, len(missing), self.block_size):
            chunk = missing[start : start + self.block_size]
            layers, embeddings = self.layer_features(images[chunk])
            for row, i in enumerate(chunk):
                self._features[keys[i]] = ([layer[row] for layer in layers], embeddings[row])
        return keys

    def encode_reference(self, images: torch.Tensor) -> None:
        """Extract and keep the features of the images not seen before (``features_of``)."""
        self.features_of(images)

    def set_reference(self, images: torch.Tensor, folders: list[str] | None = None) -> None:
        """Take (N,3,S,S) as the reference set and score the images not scored yet: all of them the
        first time; under ``reference=stream`` the newly arrived ones, against what has arrived so far
        (scores given earlier are kept). RsCIN re-scores over the reference set (its subset)."""
        keys = self.features_of(images)
        members = subset_members(self.subsets, folders, len(keys), self.reference)
        progress = None
        if not self.stream_reference:  # a stream scores one group a call: PGT's progress lines cover it
            passes = len(self.r_list) * sum(key not in self._maps for key in keys)
            progress = ProgressLog(log, self.progress_label, passes, "image passes (one per r)")
        for subset in members:
            self._score_within([keys[i] for i in subset], progress)
        self._reference = keys

    @classmethod
    def check_test_split(cls, settings: dict[str, Any], category: str, folders: list[str]) -> None:
        """With ``reference=category`` every subset of the test split must hold ``MIN_REFERENCE`` images."""
        if settings.get("reference", "category") == "category":
            try:
                subset_members(int(settings.get("subsets", 1)), folders, len(folders), "category")
            except AnorefineError as error:
                raise AnorefineError(f"{category}: {error}") from None

    def _score_within(self, keys: list[str], progress: ProgressLog | None) -> None:
        """MSM maps of the not yet scored images among ``keys`` against the others, RsCIN over ``keys``."""
        new = [i for i, key in enumerate(keys) if key not in self._maps]
        queries = [[f[None] for f in self._features[keys[i]][0]] for i in new]
        maps = self.msm_maps(keys, queries, exclude=new, progress=progress)
        for i, patch_map in zip(new, maps, strict=True):
            self._maps[keys[i]] = patch_map
        peaks = torch.stack([self._maps[key].amax() for key in keys])
        rescored = rscin(peaks, self.reference_embeddings(keys), self.k_list)
        for i in new:
            self._scores[keys[i]] = rescored[i]

    def reference_patches(self, keys: list[str], r: int) -> list[torch.Tensor]:
        """Per layer (N, h·w, C) contiguous LNAMD patches at ``r`` of the images ``keys`` in the matmul
        dtype, on the finest grid. Kept for every later query of the same reference set: all r while
        they fit ``reference_cache_mb`` (N·h·w·ΣC·len(r_list) values), else only the last r built."""
        cached_keys, patches = self._patches
        if cached_keys != keys:
            patches = {}
        if r not in patches:
            per_image = [self._features[key][0] for key in keys]
            layers = [torch.stack([f[k] for f in per_image]) for k in range(len(per_image[0]))]
            built = [z.to(self.matmul_dtype).contiguous() for z in self.aggregated(layers, r)]
            megabytes = sum(z.numel() * z.element_size() for z in built) / 2**20
            if megabytes * len(self.r_list) > self.reference_cache_mb:
                patches = {}
            patches[r] = built
            self._patches = (list(keys), patches)
        return patches[r]

    def reference_embeddings(self, keys: list[str] | None = None) -> torch.Tensor:
        return torch.stack([self._features[key][1] for key in (self._reference if keys is None else keys)])

    def msm_maps(
        self,
        keys: list[str],
        queries: list[list[torch.Tensor]],
        exclude: list[int] | None,
        progress: ProgressLog | None = None,
    ) -> list[torch.Tensor]:
        """(1,h,w) MSM maps of ``queries`` (each its per-layer (1,C,h,w) features) against the reference
        images ``keys``; with ``exclude``, query q is reference image ``exclude[q]`` and its distances
        to itself are dropped. ``progress`` counts one pass per query and r."""
        if not queries:
            return []
        height, width = queries[0][0].shape[-2:]
        total = torch.zeros(len(queries), height * width)
        for r in self.r_list:
            reference = self.reference_patches(keys, r)
            for q, query in enumerate(queries):
                for z, own in zip(reference, self.aggregated(query, r), strict=True):
                    distances = nearest_distances(own[0], z, self.block_size)
                    if exclude is not None:
                        distances = torch.cat([distances[:, : exclude[q]], distances[:, exclude[q] + 1 :]], 1)
                    total[q] += interval_mean(distances, self.interval)
                if progress is not None:
                    progress.advance()
        total /= len(self.r_list) * len(queries[0])
        return list(total.view(len(queries), 1, height, width))

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """Maps and scores of reference images as ``set_reference`` gave them; any other image (PGT's
        synthetic ones) against every reference image, its score re-scored beside theirs."""
        if not self._reference:
            raise RuntimeError("MuSc has no reference images: the curriculum calls set_reference first")
        keys = [image_key(image) for image in images]
        outside = [i for i, key in enumerate(keys) if key not in self._maps]
        fresh = dict(zip(outside, self._outside(images[outside]), strict=True)) if outside else {}
        maps, scores, features = [], [], []
        for i, key in enumerate(keys):
            if i in fresh:
                layers, patch_map, score = fresh[i]
            else:
                layers, patch_map, score = self._features[key][0], self._maps[key], self._scores[key]
            maps.append(patch_map)
            scores.append(score)
            features.append(torch.cat([resize(f[None], spatial_size(layers[0]))[0] for f in layers]))
        device = images.device
        stacked = torch.stack(maps).float(), torch.stack(scores).float(), torch.stack(features)
        return self.output(*(t.to(device) for t in stacked))

    def _outside(self, images: torch.Tensor) -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
        """(layers, map, score) of images outside the reference set; nothing of theirs is kept."""
        layers, embeddings = self.layer_features(images)
        queries = [[layer[i : i + 1] for layer in layers] for i in range(len(images))]
        maps = self.msm_maps(self._reference, queries, exclude=None)
        peaks = torch.stack([self._maps[key].amax() for key in self._reference])
        known = self.reference_embeddings()
        out = []
        for i, patch_map in enumerate(maps):
            joined = torch.cat([known, embeddings[i : i + 1]])
            score = rscin(torch.cat([peaks, patch_map.amax()[None]]), joined, self.k_list)[-1]
            out.append(([layer[i] for layer in layers], patch_map, score))
        return out


def subset_members(subsets: int, folders: list[str] | None, count: int, reference: str) -> list[list[int]]:
    """The indices of each reference subset: all images for ``subsets=1``; otherwise each folder's images
    shuffled (seed 42) and dealt in turn to subsets 0..K-1, as the official ``divide_num``. Each must
    hold ``MIN_REFERENCE`` images."""
    if subsets == 1:
        members = [list(range(count))]
    else:
        if folders is None or len(folders) != count:
            raise AnorefineError(f"model.subsets={subsets} needs each reference image's test folder")
        rng, members = random.Random(SUBSET_SEED), [[] for _ in range(subsets)]
        for folder in dict.fromkeys(folders):
            ids = [i for i, name in enumerate(folders) if name == folder]
            rng.shuffle(ids)
            for position, i in enumerate(ids):
                members[position % subsets].append(i)
    for subset in members:
        if len(subset) < MIN_REFERENCE:
            raise AnorefineError(
                f"MuSc needs at least {MIN_REFERENCE} reference images, got {len(subset)}: "
                f"model.reference={reference} (model.subsets={subsets}) scores an image against the others "
                "of its category (or its stream so far); use a larger test split or fewer subsets"
            )
    return members


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B,C,h,w) (a no-op at the same size)."""
    if spatial_size(x) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
