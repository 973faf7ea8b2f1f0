"""ARD, the anomaly refinement decoder: coarse patch map + features (+ pixel cues) -> pixel-level map.

Public part (public summaries of the AnoRefiner paper, not its abstract): a stem (1x1 conv of the
map -> 64 ch, concatenated with the features, 1x1 conv -> 256 ch), then upsampling stages that
re-read the anomaly map at every stage ("anomaly-attention") and exchange information between a
feature and an anomaly branch ("cross-residual bidirectional interaction"). Everything else is our
reconstruction and a setting (docs/ard_pgt.md): per-stage x2 upsampling with a last resize to the
input size, the attention formula, the block form, the pixel cues every stage reads (the image
itself, ``rgb_skip``, and the pixel novelty of ``anorefine.refiners.novelty``, ``guidance``), and
the residual head. With ``residual=True`` the output is ``baseline_map + scale * delta`` with a
zero-initialised ``delta`` head, so an untrained ARD returns exactly the ``none`` refiner's map.
Maps enter the network normalised by per-stream statistics (``calibrate``); the statistics only
scale ``delta``, so they never break that identity.
"""

from __future__ import annotations

import math
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import nn

from anorefine.detectors.base import BaselineBlur, DetectorOutput
from anorefine.errors import AnorefineError
from anorefine.refiners.base import Refiner, base_map, baseline_map
from anorefine.refiners.novelty import NoveltyGuidance
from anorefine.shapes import spatial_size

#: Channels of the stem's map embedding and of its fused output (the published stem).
MAP_EMBED_CHANNELS = 64
STEM_CHANNELS = 256
#: Channels of the shallow pixel-cue encoder (image and/or novelty) read by every stage.
CUE_CHANNELS = 8
MIN_WIDTH = 8
#: Each stage's head predicts this many sub-pixels per side of a working cell (pixel shuffle).
HEAD_UPSCALE = 2
#: ``refiner.image_score``: the detector's image score, or the refined map's maximum.
ImageScore = Literal["detector", "max"]
#: Initial (scale, offset) of the training loss's logit: probability 1/2 at 3 stream standard deviations.
LOGIT_CALIBRATION_INIT = (1.0, 3.0)


def conv(in_ch: int, out_ch: int, kernel: int = 3, act: bool = True) -> nn.Sequential:
    """Same-size convolution, optionally followed by ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (a no-op at the same size)."""
    if spatial_size(x) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def stage_sizes(grid: tuple[int, int], size: tuple[int, int], stages: int | None) -> list[tuple[int, int]]:
    """Working size of each stage: x2 per stage from the grid (a stage's head predicts at twice that).

    ``stages=None`` picks enough stages for the last head to reach the input size (2 for stride 8,
    3 for strides 14 and 16); the last head's output is resized to the input size when it differs.
    """
    if stages is None:
        ratio = max(size[0] / grid[0], size[1] / grid[1])
        stages = max(1, math.ceil(math.log2(ratio) - 1e-6) - 1)
    return [(grid[0] * 2**k, grid[1] * 2**k) for k in range(1, stages + 1)]


class CrossResidualBlock(nn.Module):
    """Bidirectional interaction: each branch adds a 3x3 transform of the *other* branch to itself."""

    def __init__(self, feature_ch: int, anomaly_ch: int) -> None:
        super().__init__()
        self.anomaly_to_feature = conv(anomaly_ch, feature_ch, act=False)
        self.feature_to_anomaly = conv(feature_ch, anomaly_ch, act=False)

    def forward(self, f: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(f + self.anomaly_to_feature(a)), F.relu(a + self.feature_to_anomaly(f))


class DecoderStage(nn.Module):
    """One stage: reduce, upsample x2, re-read the map, attend, interact, predict a delta at x2 again.

    Working at half the head's resolution and predicting ``HEAD_UPSCALE``² sub-pixels per cell
    (pixel shuffle) keeps every convolution off the full input resolution (CPU cost).
    """

    def __init__(
        self, in_f: int, in_a: int, width: int, cue_ch: int, attention: bool, bi_blocks: int, zero_head: bool
    ) -> None:
        super().__init__()
        a_width = max(width // 2, MIN_WIDTH // 2)
        self.reduce_f = conv(in_f, width, kernel=1, act=False)
        self.reduce_a = conv(in_a, a_width, kernel=1, act=False)
        # guide = (current estimate, baseline) at this stage's resolution: the map re-read.
        self.feature_in = conv(width + cue_ch, width)
        self.anomaly_in = conv(a_width + 2, a_width)
        self.attention = conv(a_width + 2, width, act=False) if attention else None
        self.blocks = nn.ModuleList(CrossResidualBlock(width, a_width) for _ in range(bi_blocks))
        head_conv = nn.Conv2d(width + a_width, HEAD_UPSCALE**2, 3, padding=1)
        self.head = nn.Sequential(head_conv, nn.PixelShuffle(HEAD_UPSCALE))
        if zero_head:
            nn.init.zeros_(head_conv.weight)
            nn.init.zeros_(cast(torch.Tensor, head_conv.bias))  # a Conv2d built with its bias
        self.out_f, self.out_a = width, a_width

    def forward(
        self, f: torch.Tensor, a: torch.Tensor, guide: torch.Tensor, cues: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = spatial_size(guide)
        f = resize(self.reduce_f(f), size)
        a = resize(self.reduce_a(a), size)
        f = self.feature_in(f if cues is None else torch.cat([f, cues], 1))
        a = self.anomaly_in(torch.cat([a, guide], 1))
        if self.attention is not None:
            # Anomaly-attention: a per-channel gate in (0, 2) from the anomaly branch and the map,
            # suppressing (<1) background and enhancing (>1) anomalous feature responses.
            f = f * (2.0 * torch.sigmoid(self.attention(torch.cat([a, guide], 1))))
        for block in self.blocks:
            f, a = block(f, a)
        return f, a, self.head(torch.cat([f, a], 1))


class ArdNetwork(nn.Module):
    """The decoder proper; built once the feature channels are known (see ``ArdRefiner.build``)."""

    def __init__(
        self,
        feature_ch: int,
        num_stages: int,
        width: int,
        attention: bool,
        bi_blocks: int,
        cue_channels: int,
        zero_head: bool,
    ) -> None:
        super().__init__()
        self.map_embed = conv(1, MAP_EMBED_CHANNELS, kernel=1)
        self.stem = conv(MAP_EMBED_CHANNELS + feature_ch, STEM_CHANNELS, kernel=1)
        cue_ch = CUE_CHANNELS if cue_channels else 0
        cue_in = cue_channels * HEAD_UPSCALE**2  # the cues at the head's resolution, space-to-depth
        self.cues = nn.ModuleList(conv(cue_in, cue_ch) for _ in range(num_stages)) if cue_channels else None
        stages, in_f, in_a = [], STEM_CHANNELS, MAP_EMBED_CHANNELS
        for k in range(num_stages):
            stage = DecoderStage(
                in_f, in_a, max(width >> k, MIN_WIDTH), cue_ch, attention, bi_blocks, zero_head
            )
            stages.append(stage)
            in_f, in_a = stage.out_f, stage.out_a
        self.stages = nn.ModuleList(stages)

    def forward(
        self,
        cues: torch.Tensor | None,
        coarse: torch.Tensor,
        features: torch.Tensor,
        baselines: list[torch.Tensor],
        residual: bool,
    ) -> list[torch.Tensor]:
        """Per-stage deltas (normalised units), stage k's at the size of ``baselines[k + 1]``.

        ``cues``: (B,C,H,W) pixel cues at the input size (``ArdRefiner.pixel_cues``), or None.
        ``baselines`` holds the normalised baseline at every stage's working size, then at the
        input size (where the last head's output is resized to, if it differs).
        """
        a = self.map_embed(coarse)
        f = self.stem(torch.cat([a, features], 1))
        delta = torch.zeros_like(baselines[0])
        deltas = []
        for k, stage in enumerate(self.stages):
            size = spatial_size(baselines[k])
            estimate = baselines[k] + delta if residual else delta
            encoded = None
            if self.cues is not None and cues is not None:
                head_size = (HEAD_UPSCALE * size[0], HEAD_UPSCALE * size[1])
                at_head = F.interpolate(cues, size=head_size, mode="bilinear", antialias=True)
                encoded = self.cues[k](F.pixel_unshuffle(at_head, HEAD_UPSCALE))
            f, a, step = stage(f, a, torch.cat([estimate, baselines[k]], 1), encoded)
            delta = resize(resize(delta, spatial_size(step)) + step, spatial_size(baselines[k + 1]))
            deltas.append(delta)
        return deltas


class ArdRefiner(Refiner):
    """The anomaly refinement decoder behind the refiner contract (trained by ``curriculum=pgt``).

    The network is built on the first call (or by ``build``/``calibrate``), when the detector's
    feature channels and grid are known, so one config serves every detector and stride.

    Three heads: ``support_gain`` (the default, 2) predicts each pixel's anomaly probability p and
    raises the base map by gain · p · (base above the stream mean), so no pixel is ever lowered;
    ``support_gain=null`` predicts a bounded residual added to the base map (``residual``,
    ``delta_range``, ``center``, ``gate`` shape it); ``support_gain=null residual=false`` makes the
    decoder's last stage the map itself, through the affine (monotone) stream calibration: the
    paper's description (``refiner=ard_paper``, which also drops the image cues). The support head
    was chosen on the transfer protocol's development textures (docs/transfer.md). Until a
    curriculum starts training it (``start_training``), every head returns the base map.
    """

    trainable = True

    def __init__(
        self,
        width: int = 32,
        stages: int | None = None,
        attention: bool = True,
        bi_blocks: int = 1,
        rgb_skip: bool = True,
        guidance: NoveltyGuidance | None = None,
        residual: bool = True,
        delta_range: tuple[float, float] | None = (-1.0, 10.0),
        center: bool = True,
        gate: float | None = None,
        support_gain: float | None = 2.0,
        sigma: float | None = None,
        image_score: ImageScore = "detector",
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Frozen: the optimiser trains the decoder only (``trainable_parameters``).
        self.guidance = guidance.requires_grad_(False) if guidance is not None else None
        if image_score not in get_args(ImageScore):
            raise AnorefineError(f"refiner.image_score={image_score!r}: use one of {get_args(ImageScore)}")
        self.width, self.stages, self.attention = width, stages, attention
        self.bi_blocks, self.rgb_skip, self.residual = bi_blocks, rgb_skip, residual
        self.sigma, self.score_source, self.seed = sigma, image_score, seed
        if delta_range is not None and not delta_range[0] <= 0 < delta_range[1]:
            raise AnorefineError(f"refiner.delta_range={delta_range}: needs low <= 0 < high (or null)")
        self.center, self.gate, self.support_gain = center, gate, support_gain
        self.delta_range = None if delta_range is None else (float(delta_range[0]), float(delta_range[1]))
        self.network: ArdNetwork | None = None
        self.map_mean: torch.Tensor
        self.map_scale: torch.Tensor
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.trained: torch.Tensor
        self.num_stages = 0
        self.layout = torch.contiguous_format  # the decoder's memory layout (``use_layout``)
        self.register_buffer("map_mean", torch.zeros(()))
        self.register_buffer("map_scale", torch.ones(()))
        self.register_buffer("feature_mean", torch.zeros(0))
        self.register_buffer("feature_std", torch.ones(0))
        self.register_buffer("trained", torch.tensor(False))
        # Logit calibration (scale, offset) of the normalised refined map, used by the training loss
        # only: a monotonic map, so it never changes a refined map's ranking.
        self.logit_calibration = nn.Parameter(torch.tensor(LOGIT_CALIBRATION_INIT))
        if support_gain is not None:  # the support head's loss reads its probability directly
            self.logit_calibration.requires_grad_(False)

    @property
    def is_built(self) -> bool:
        return self.network is not None

    @property
    def cue_channels(self) -> int:
        """Channels of ``pixel_cues``: 3 for the image (``rgb_skip``), 1 for the novelty."""
        return 3 * self.rgb_skip + (self.guidance is not None)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What a curriculum trains: the decoder and the loss calibration, never the novelty backbone."""
        return [p for p in self.parameters() if p.requires_grad]

    def pixel_cues(self, images: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor | None:
        """(B, cue_channels, H, W) pixel-level inputs of every stage, or None without cues.

        The image is standardised per image (brightness-invariant); the novelty enters as the log of
        its ratio to the image's median novelty (0 on typical texture, unitless across textures).
        """
        if not self.cue_channels:
            return None
        cues = []
        with torch.no_grad():
            if self.rgb_skip:
                mean = images.mean(dim=(2, 3), keepdim=True)
                std = images.std(dim=(2, 3), keepdim=True)
                cues.append((images - mean) / (std + 1e-3))
            if self.guidance is not None:
                raw = self.guidance(images.float(), anomaly_map.float())
                median = raw.flatten(1).median(1).values.clamp_min(1e-8).view(-1, 1, 1, 1)
                cues.append(torch.log((raw / median).clamp_min(1e-3)))
        return torch.cat(cues, 1)

    def build(self, output: DetectorOutput, size: tuple[int, int]) -> None:
        """(Re)create the network with fresh seeded weights for this detector output and input size."""
        channels, grid = output.features.shape[1], spatial_size(output.anomaly_map)
        self.num_stages = len(stage_sizes(grid, size, self.stages))
        # Built lazily, possibly inside a test loop: parameters must not be inference tensors.
        with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            network = ArdNetwork(
                channels,
                self.num_stages,
                self.width,
                self.attention,
                self.bi_blocks,
                self.cue_channels,
                zero_head=self.residual and self.support_gain is None,
            )
            self.network = network.to(output.features.device)
            self.layout = torch.contiguous_format
            self.logit_calibration.data = torch.tensor(LOGIT_CALIBRATION_INIT, device=output.features.device)
            if self.feature_mean.numel() != channels:
                self.feature_mean = torch.zeros(channels, device=output.features.device)
                self.feature_std = torch.ones(channels, device=output.features.device)

    def calibrate(self, anomaly_maps: torch.Tensor, features: torch.Tensor) -> None:
        """Set the stream statistics from unlabeled coarse maps (N,1,h,w) and features (N,C,h,w)."""
        maps = anomaly_maps.detach().float()
        self.map_mean = maps.mean().to(self.map_mean.device)
        self.map_scale = maps.std().clamp_min(1e-6).to(self.map_scale.device)
        feats = features.detach().float().transpose(0, 1).flatten(1)
        self.feature_mean = feats.mean(1).to(self.map_mean.device)
        self.feature_std = feats.std(1).clamp_min(1e-6).to(self.map_mean.device)

    def normalise(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Raw map values -> stream-normalised units."""
        return (anomaly_map - self.map_mean) / self.map_scale

    def decode(
        self, images: torch.Tensor, output: DetectorOutput, cues: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(normalised baselines, deltas) at each stage's output size; the last is the images' size.

        ``cues``: precomputed ``pixel_cues`` (training caches them with each crop); computed when None.
        """
        size = spatial_size(images)
        if self.network is None:
            self.build(output, size)
        self.use_layout(torch.contiguous_format if torch.is_grad_enabled() else torch.channels_last)
        coarse = self.normalise(output.anomaly_map.float())
        sizes = [*stage_sizes(spatial_size(coarse), size, self.stages), size]
        sigma = output.baseline.sigma if self.sigma is None else self.sigma
        align = output.baseline.align_corners  # the stages' own baselines keep the default border
        baselines = [baseline_map(coarse, s, BaselineBlur(sigma * s[0] / size[0], align)) for s in sizes]
        features = (output.features.float() - self.feature_mean[:, None, None]) / self.feature_std[
            :, None, None
        ]
        if cues is None:
            cues = self.pixel_cues(images.float(), output.anomaly_map)
        network = self.network
        assert network is not None  # built above on first use
        if self.support_gain is not None:  # per-stage anomaly logits
            return baselines[1:], network(cues, coarse, features, baselines, False)
        deltas = network(cues, coarse, features, baselines, self.residual)
        return baselines[1:], [
            self.gated(self.bound(d), b) for d, b in zip(deltas, baselines[1:], strict=True)
        ]

    def use_layout(self, layout: torch.memory_format) -> None:
        """The decoder's memory layout: the default one when autograd is on (training, so PGT's
        trajectory never depends on it), channels_last without (inference), where oneDNN's
        convolutions are faster on CPU (the ARD's share of a PatchCore-Lite0 pass fell from 0.98x to
        0.66x in make bench) with maps equal to 1e-5 relative (tests/test_ard.py)."""
        if self.network is not None and self.layout != layout:
            with torch.inference_mode(False):  # inside a test loop the weights must stay trainable
                self.network.to(memory_format=layout)
            self.layout = layout

    def gated(self, delta: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """With ``gate`` (in stream std units), the residual is scaled by clamp(baseline / gate, 0, 1):
        the ARD reshapes only where the detector already sees something, never the background."""
        if self.gate is None or not self.residual:
            return delta
        return delta * (baseline / self.gate).clamp(0.0, 1.0)

    def bound(self, delta: torch.Tensor) -> torch.Tensor:
        """Re-centre a residual on each image's median (``center``), then soft-clip it into
        ``delta_range`` (tanh on each side; a lower bound of 0 keeps only raises). A zero delta stays
        exactly zero."""
        if not self.residual:
            return delta
        if self.center:
            delta = delta - delta.flatten(1).median(1).values[:, None, None, None]
        if self.delta_range is None:
            return delta
        low, high = self.delta_range
        lowered = -low * torch.tanh(delta / -low) if low < 0 else torch.zeros_like(delta)  # low 0: raise only
        return torch.where(delta >= 0, high * torch.tanh(delta / high), lowered)

    def estimates(
        self, images: torch.Tensor, output: DetectorOutput, cues: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Per-stage refined maps in normalised units (what the training loss reads)."""
        baselines, deltas = self.decode(images, output, cues)
        if not self.residual or self.support_gain is not None:
            return deltas
        return [b + d for b, d in zip(baselines, deltas, strict=True)]

    def probability(self, estimate: torch.Tensor) -> torch.Tensor:
        """Calibrated anomaly probability of a normalised estimate (for the training loss)."""
        if self.support_gain is not None:
            return torch.sigmoid(estimate)
        scale, offset = self.logit_calibration
        return torch.sigmoid(F.softplus(scale) * (estimate - offset))

    def start_training(self) -> None:
        """Called when a curriculum starts training: from then on the map is the refined one."""
        self.trained.fill_(True)

    def base(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        """The base map the residual or support is added to: the detector's own (or ``sigma``'s blur)."""
        size = spatial_size(images)
        if self.sigma is None:
            return base_map(output, size)
        return baseline_map(output.anomaly_map, size, output.baseline._replace(sigma=self.sigma))

    def image_score(self, refined: torch.Tensor, detector_score: torch.Tensor) -> torch.Tensor:
        """The detector's score, or the refined map's maximum (``refiner.image_score=max``)."""
        return refined.flatten(1).amax(1) if self.score_source == "max" else detector_score

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        if not bool(self.trained):  # every head: an untrained ARD is the base map
            return self.base(images, output)
        if self.support_gain is not None:
            return self.supported(images, output)
        _, deltas = self.decode(images, output)
        delta = deltas[-1].float()
        # The output map is float32 whatever the trainer's precision (bf16 autocast runs the decoder only).
        with torch.autocast(images.device.type, enabled=False):
            if self.residual:
                base = self.base(images, output)
                return base + self.map_scale * delta
            return self.map_mean + self.map_scale * delta

    def supported(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        """Support head: base + gain · p · (base above the stream mean), p the decoder's pixel anomaly
        probability. No pixel is ever lowered."""
        base = self.base(images, output)
        gain = self.support_gain
        assert gain is not None  # forward calls this only for the support head
        _, logits = self.decode(images, output)
        with torch.autocast(images.device.type, enabled=False):
            probability = torch.sigmoid(logits[-1].float())
            return base + gain * probability * (base - self.map_mean).clamp_min(0.0)
