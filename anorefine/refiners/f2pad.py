"""F2PAD (reconstruction): per-image optimisation of a pixel-level anomaly map from feature-level scores.

Proposal. The optimised pixel map is ``y = floor + scale * m * U(u)``:

- ``u``, the anomaly *intensity*, a field on a grid ``intensity_scale`` times finer than the
  detector's, upsampled bilinearly by ``U`` to the working resolution;
- ``m = max(g / median(g), guidance_min) ** guidance_power``, the *support*: ``g`` says where, at
  pixel level, the image looks unlike its own normal-scored parts (``anorefine.refiners.novelty``);
- ``floor`` / ``scale``: each coarse map's low quantile / robust spread, so that weights are unitless
  and the refined map stays in the detector's score units (comparable with the base map).

Energy over ``u`` (initialised with the coarse map), minimised with Adam for ``steps`` steps:

    data_weight       * mean_views mean_cells (M_q[K_v x] - (A_v - floor) / scale)^2
    smoothness_weight * mean |grad u|^2

with ``K_v`` the receptive-field forward model of view ``v`` (``f2pad_forward``), ``M_q`` its power
mean (``mixture_power`` q; 1 = linear mixture) and ``x = U(u)``, or ``x = m * U(u)`` when
``data_sees_guidance``. Views beyond the first are the detector's maps of the image shifted by
sub-stride offsets (``views`` per axis; they need ``attach(detector)``).

Combination (``combine``). ``raise`` (the default) never lowers the detector's base map ``b``: with
``t = median(b) + threshold_mads * 1.4826 MAD(b)`` per image, the refined map is
``clip(y, b, b + raise_cap * max(b - t, 0))``. Pixels at or below ``t`` keep their base value, the
others may only rise, and only as far as the proposal and their own excess allow. So a defect pixel
whose *appearance* is normal (a halo, a displaced texture, the inside of a large stain), which the
proposal would push below normal texture, keeps the detector's score; and within an image no pixel
ever falls below one it outranked unless that one was above ``t``. ``replace`` returns ``y`` itself
(the design before the transfer protocol's annotated kinds; docs/f2pad.md). Without optimisation
(``steps=0``) there is no proposal and ``raise`` returns the base map. Only the abstract of the paper
is public: every term and weight is a setting, and docs/f2pad.md reports what each does.
"""

from __future__ import annotations

import math
import time
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.errors import AnorefineError
from anorefine.refiners import separable
from anorefine.refiners.base import Refiner, base_map
from anorefine.refiners.f2pad_forward import Kernel, ReceptiveFieldOperator, shift
from anorefine.refiners.novelty import NoveltyGuidance
from anorefine.shapes import spatial_size

#: How the optimised map meets the base map: raise it (never lower a pixel) or replace it.
Combine = Literal["raise", "replace"]


def robust_scale(coarse: torch.Tensor) -> torch.Tensor:
    """(B,1,1,1) spread of each coarse map: 1.4826 * median absolute deviation (std if that is 0)."""
    flat = coarse.flatten(1)
    mad = 1.4826 * (flat - flat.median(1, keepdim=True).values).abs().median(1).values
    spread = torch.where(mad > 0, mad, flat.std(1))
    return spread.clamp_min(1e-8).view(-1, 1, 1, 1)


def raise_threshold(base: torch.Tensor, threshold_mads: float) -> torch.Tensor:
    """(B,1,1,1) per-image threshold of a (B,1,H,W) base map: median + ``threshold_mads`` robust spreads."""
    flat = base.flatten(1)
    median = flat.median(1).values.view(-1, 1, 1, 1)
    return median + threshold_mads * robust_scale(base)


def raise_only(proposal: torch.Tensor, base: torch.Tensor, cap: float, threshold_mads: float) -> torch.Tensor:
    """``clip(proposal, base, base + cap * max(base - t, 0))``, ``t`` the image's ``raise_threshold``:
    no pixel is lowered, pixels at or below ``t`` are unchanged."""
    excess = (base - raise_threshold(base, threshold_mads)).clamp_min(0.0)
    return torch.minimum(torch.maximum(proposal, base), base + cap * excess)


def view_offsets(views: int, stride: int) -> list[tuple[int, int]]:
    """``views`` x ``views`` sub-stride offsets (dy, dx) evenly spaced in [0, stride), (0, 0) first."""
    steps = [round(i * stride / views) for i in range(views)]
    return [(dy, dx) for dy in steps for dx in steps]


def smoothness(field_: torch.Tensor) -> torch.Tensor:
    """Mean squared finite difference of a (B,1,h,w) field, per image (B,)."""
    dy = (field_[..., 1:, :] - field_[..., :-1, :]).pow(2).flatten(1).mean(1)
    dx = (field_[..., :, 1:] - field_[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dy + dx


class F2padRefiner(Refiner):
    """Inference-time optimisation (no training), batched; ``seconds_per_image`` records its cost.

    Each forward appends one entry per image: the wall time of refining the whole batch (guidance,
    extra views, optimisation) divided by the batch size; ``timing()`` summarises the list.
    """

    optimises_at_test_time = True

    def __init__(
        self,
        steps: int = 50,
        lr: float = 0.05,
        data_weight: float = 1.0,
        smoothness_weight: float = 0.3,
        intensity_scale: int = 2,
        mixture_power: float = 1.0,
        data_sees_guidance: bool = False,
        kernel: Kernel = "gaussian",
        sigma_ratio: float = 0.25,
        receptive_field: int | None = None,
        stride: int | None = None,
        views: int = 1,
        downsample: int = 2,
        floor_quantile: float = 0.0,
        guidance: NoveltyGuidance | None = None,
        guidance_power: float = 2.0,
        guidance_min: float = 1.0,
        combine: Combine = "raise",
        raise_cap: float = 32.0,
        threshold_mads: float = 3.0,
    ) -> None:
        """``guidance``: the pixel novelty that shapes the support (None: a flat support of ones)."""
        super().__init__()
        if combine not in get_args(Combine):
            raise AnorefineError(f"refiner.combine={combine!r} is unknown: use one of {get_args(Combine)}")
        if raise_cap < 0 or threshold_mads < 0:
            raise AnorefineError(
                f"refiner.raise_cap ({raise_cap}) and threshold_mads ({threshold_mads}) must be >= 0"
            )
        self.combine, self.raise_cap, self.threshold_mads = combine, raise_cap, threshold_mads
        self.steps, self.lr = steps, lr
        self.data_weight, self.smoothness_weight = data_weight, smoothness_weight
        self.intensity_scale, self.mixture_power = intensity_scale, mixture_power
        self.data_sees_guidance = data_sees_guidance
        self.kernel, self.sigma_ratio = kernel, sigma_ratio
        self.receptive_field, self.stride = receptive_field, stride
        self.views, self.downsample, self.floor_quantile = views, downsample, floor_quantile
        self.guidance_power, self.guidance_min = guidance_power, guidance_min
        self.guidance = guidance
        self.detector: list[Detector] = []  # a list: the detector must not become a submodule
        self.seconds_per_image: list[float] = []

    def attach(self, detector: Detector) -> None:
        """Keep the fitted detector, which shifted views (``views > 1``) re-run."""
        self.detector = [detector]

    def timing(self) -> dict[str, float | int]:
        """Per-image refinement time so far: number of images, mean and max seconds."""
        times = self.seconds_per_image
        return {
            "images": len(times),
            "mean_s": sum(times) / len(times) if times else 0.0,
            "max_s": max(times, default=0.0),
        }

    def coarse_views(
        self, images: torch.Tensor, output: DetectorOutput, stride: int
    ) -> list[tuple[tuple[int, int], torch.Tensor]]:
        """(offset, coarse map) of every view: the given map, then the detector on shifted images."""
        offsets = view_offsets(self.views, stride)
        found = [(offsets[0], output.anomaly_map)]
        if len(offsets) > 1 and not self.detector:
            raise RuntimeError("F2PAD with views > 1 re-runs the detector: call refiner.attach(detector)")
        with torch.no_grad():
            found += [
                (o, self.detector[0](shift(images, o, mode="reflect")).anomaly_map) for o in offsets[1:]
            ]
        return [(offset, coarse.detach().clone().float()) for offset, coarse in found]

    def support(self, images: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) support ``m``: relative guidance, clamped below, raised to a power (or ones)."""
        if self.guidance is None:
            return torch.ones_like(images[:, :1])
        raw = self.guidance(images, coarse)
        relative = raw / raw.flatten(1).median(1).values.clamp_min(1e-8).view(-1, 1, 1, 1)
        return relative.clamp_min(self.guidance_min) ** self.guidance_power

    def optimise(
        self,
        targets: list[tuple[tuple[int, int], torch.Tensor]],
        support: torch.Tensor,
        operator: ReceptiveFieldOperator,
    ) -> torch.Tensor:
        """Minimise the energy over the intensity field; returns ``m * U(u)`` at the support's size.

        ``targets``: (offset at working resolution, normalised coarse map); the first initialises u.
        ``U`` and every view's ``K_v`` are matrices per axis (``separable``); when the data term is
        linear in u (``data_sees_guidance`` off, ``mixture_power`` 1) their products are precomputed,
        so no step touches the working resolution (same energy, a fraction of the cost).
        """
        size = spatial_size(support)
        first = targets[0][1]
        grid = (first.shape[-2] * self.intensity_scale, first.shape[-1] * self.intensity_scale)
        intensity = F.interpolate(first, size=grid, mode="bilinear", align_corners=False).requires_grad_(True)
        device, dtype = first.device, first.dtype
        upsample = [
            separable.resize_matrix(g, s).to(device=device, dtype=dtype)
            for g, s in zip(grid, size, strict=True)
        ]
        power = self.mixture_power
        linear = not self.data_sees_guidance and power == 1.0
        views = []
        for offset, target in targets:
            matrices = operator.matrices(spatial_size(target), size, offset)
            pooling = [m.to(device=device, dtype=dtype) for m in matrices]
            views.append([p @ u for p, u in zip(pooling, upsample, strict=True)] if linear else pooling)
        optimizer = torch.optim.Adam([intensity], lr=self.lr)
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            source = intensity
            if not linear:
                source = separable.apply(intensity, *upsample)
                if self.data_sees_guidance:
                    source = support * source
                if power != 1.0:
                    source = source.clamp_min(1e-6) ** power
            energy = self.smoothness_weight * smoothness(intensity).mean()
            for (rows, cols), (_, target) in zip(views, targets, strict=True):
                predicted = separable.apply(source, rows, cols)
                if power != 1.0:
                    predicted = predicted ** (1.0 / power)
                energy = energy + self.data_weight * (predicted - target).pow(2).mean() / len(targets)
            energy.backward()
            optimizer.step()
        with torch.no_grad():
            return support * separable.apply(intensity, *upsample)

    def forward(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        started = time.perf_counter()
        if self.combine == "replace":
            refined = self.proposal(images, output)
        elif self.steps == 0:  # nothing optimised, nothing to raise with
            refined = base_map(output, spatial_size(images))
        else:
            base = base_map(output, spatial_size(images))
            refined = raise_only(self.proposal(images, output), base, self.raise_cap, self.threshold_mads)
        self.seconds_per_image.extend([(time.perf_counter() - started) / images.shape[0]] * images.shape[0])
        return refined

    def proposal(self, images: torch.Tensor, output: DetectorOutput) -> torch.Tensor:
        """The optimised pixel map ``y`` (B,1,H,W) in the detector's score units."""
        # The test loop runs under inference_mode: leave it, and build every graph from clones.
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone().float()
            stride = self.stride or output.stride
            views = self.coarse_views(images, output, stride)
            coarse = views[0][1]
            floor = coarse.flatten(1).quantile(self.floor_quantile, dim=1).view(-1, 1, 1, 1)
            scale = robust_scale(coarse)
            # Work on a grid `factor` times coarser than the images (it must divide stride and offsets).
            factor = math.gcd(self.downsample, stride, *(c for offset, _ in views for c in offset))
            receptive_field = self.receptive_field or output.receptive_field
            operator = ReceptiveFieldOperator(
                stride // factor, max(1, round(receptive_field / factor)), self.kernel, self.sigma_ratio
            )
            targets = [((dy // factor, dx // factor), (view - floor) / scale) for (dy, dx), view in views]
            support = F.avg_pool2d(self.support(images, coarse), factor)
            solved = self.optimise(targets, support, operator)
            size = spatial_size(images)
            refined = floor + scale * F.interpolate(solved, size=size, mode="bilinear", align_corners=False)
        return refined.detach()
