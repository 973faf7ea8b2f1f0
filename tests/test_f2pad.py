"""F2PAD: forward model, optimiser limits, shape recovery, memory, views and config."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_train

from anorefine.conf import CONF_DIR
from anorefine.datasets import open_dataset
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.refiners.base import baseline_map
from anorefine.refiners.f2pad import F2padRefiner, view_offsets
from anorefine.refiners.f2pad_forward import ReceptiveFieldOperator, receptive_field_profile, shift
from anorefine.refiners.novelty import DISTANCE_BLOCK, NoveltyGuidance, nearest_distance


def best_iou(scores: torch.Tensor, mask: torch.Tensor) -> float:
    """The best IoU of ``scores >= t`` with ``mask``, thresholds at every 0.1% quantile of the top half."""
    thresholds = scores.flatten().quantile(torch.linspace(0.5, 1.0, 501))
    ious = [((scores >= t) & mask).sum() / ((scores >= t) | mask).sum() for t in thresholds]
    return float(max(ious))


def output_of(coarse: torch.Tensor, stride: int, receptive_field: int) -> DetectorOutput:
    return DetectorOutput(coarse, coarse.flatten(1).amax(1), coarse, stride, receptive_field)


def test_operator_identity_constants_and_centring() -> None:
    maps = torch.rand(2, 1, 16, 16)
    assert torch.equal(ReceptiveFieldOperator(1, 1)(maps, (16, 16)), maps)
    operator = ReceptiveFieldOperator(8, 24)
    assert torch.allclose(operator(torch.full((1, 1, 64, 64), 3.0), (8, 8)), torch.full((1, 1, 8, 8), 3.0))
    impulse = torch.zeros(1, 1, 64, 64)
    impulse[0, 0, 20, 36] = 1.0
    cells = operator(impulse, (8, 8))[0, 0]
    assert divmod(int(cells.argmax()), 8) == (2, 4)  # the cell whose stride block holds the pixel
    assert torch.equal(shift(impulse, (2, -3))[0, 0].nonzero()[0], torch.tensor([18, 39]))


@pytest.mark.parametrize(
    ("stride", "kernel", "offset", "grid"),
    [(8, 24, (0, 0), (8, 8)), (4, 9, (2, -3), (13, 11)), (14, 14, (5, 0), (4, 5))],
)
def test_operator_is_the_receptive_field_mean_of_the_shifted_map(stride, kernel, offset, grid) -> None:
    """Every cell, written from the definition: replicate-shift the map, then weigh the pixels under
    the cell's kernel (clamped to the map) by the normalised profile."""
    maps = torch.rand(2, 1, 50, 54, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    operator = ReceptiveFieldOperator(stride, kernel)
    size, margin = operator.kernel_size, (operator.kernel_size - stride) // 2
    profile = receptive_field_profile(size)
    shifted = shift(maps, offset).numpy()
    expected = np.zeros((2, 1, *grid))
    for i in range(grid[0]):
        for j in range(grid[1]):
            rows = np.clip(stride * i - margin + np.arange(size), 0, 49)
            cols = np.clip(stride * j - margin + np.arange(size), 0, 53)
            window = shifted[:, :, rows][:, :, :, cols]
            expected[:, :, i, j] = np.einsum("bcyx,y,x->bc", window, profile.numpy(), profile.numpy())
    assert np.abs(operator(maps, grid, offset).numpy() - expected).max() < 1e-12


def test_identity_forward_model_without_priors_returns_the_coarse_map() -> None:
    refiner = F2padRefiner(
        stride=1, receptive_field=1, intensity_scale=1, smoothness_weight=0.0, downsample=1, combine="replace"
    )
    coarse = torch.rand(3, 1, 32, 32) * 5 + 1
    refined = refiner(torch.rand(3, 3, 32, 32), output_of(coarse, 8, 24))
    assert torch.allclose(refined, coarse, atol=1e-4)


def test_sharp_shape_through_the_forward_model_is_recovered() -> None:
    """A sharp L-shaped defect, seen only through stride-8 / 24-px cells, comes back with IoU >= 0.9."""
    torch.manual_seed(0)
    size = 128
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[40:90, 30:46] = True
    mask[74:90, 30:100] = True
    texture = 0.5 + 0.08 * torch.randn(1, 3, size, size)
    image = torch.where(mask, torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1), texture).clamp(0, 1)
    coarse = 1.0 + 4.0 * ReceptiveFieldOperator(8, 24)(mask.float()[None, None], (16, 16))
    for combine in ("raise", "replace"):  # ImageNet features
        refined = F2padRefiner(guidance=NoveltyGuidance(), combine=combine)(image, output_of(coarse, 8, 24))
        assert best_iou(refined[0, 0], mask) >= 0.9, combine
    assert best_iou(baseline_map(coarse, (size, size))[0, 0], mask) < 0.85


def random_case(seed: int) -> tuple[torch.Tensor, DetectorOutput]:
    """Images and coarse maps of a few bright blobs on noise (stride 8, receptive field 24)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, 1, 8, 8, generator=generator)
    coarse[:2, :, 2:4, 3:6] += 3.0 * torch.rand(2, 1, 2, 3, generator=generator)
    return torch.rand(4, 3, 64, 64, generator=generator), output_of(coarse, 8, 24)


def test_zero_steps_return_the_base_map() -> None:
    """Without optimisation there is no proposal: the default (raise) F2PAD is exactly the base map."""
    images, output = random_case(0)
    refined = F2padRefiner(guidance=NoveltyGuidance(pretrained=False, reference_size=64), steps=0)(
        images, output
    )
    assert torch.equal(refined, baseline_map(output.anomaly_map, (64, 64)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raise_never_lowers_and_keeps_the_base_order_below_the_threshold(seed: int) -> None:
    """The default's guarantees, on random maps: no pixel is lowered; pixels at or below the image's
    threshold (median + 3 robust spreads) keep their value; so within an image no pixel of the base
    map's top decile is ranked below one of its bottom half; and across all images a pair whose base
    order flips always has its lower pixel above its own image's threshold."""
    images, output = random_case(seed)
    refiner = F2padRefiner(guidance=NoveltyGuidance(pretrained=False, reference_size=64), steps=20)
    base = baseline_map(output.anomaly_map, (64, 64))
    refined = refiner(images, output)
    assert bool((refined >= base).all()) and bool((refined > base).any())
    flat_base, flat_refined = base.flatten(1), refined.flatten(1)
    median = flat_base.median(1, keepdim=True).values
    spread = 1.4826 * (flat_base - median).abs().median(1, keepdim=True).values
    below = flat_base <= median + 3.0 * spread
    assert torch.equal(flat_refined[below], flat_base[below])
    for b, r in zip(flat_base, flat_refined, strict=True):
        top, bottom = b >= b.quantile(0.9), b <= b.quantile(0.5)
        assert float(r[top].min()) >= float(r[bottom].max())
    order = flat_base.flatten().argsort()
    lower_above = (~below).flatten()[order]  # pixels in ascending base order
    ranked = flat_refined.flatten()[order]
    above_min = torch.cummin(ranked.flip(0), 0).values.flip(0)  # min refined at or above each rank
    flipped = ranked[:-1] > above_min[1:]  # a pixel now above one it was below
    assert bool(flipped.any())
    assert bool(lower_above[:-1][flipped].all())


def test_blocked_nearest_distance_equals_cdist_then_min() -> None:
    """Across several blocks of queries, exact duplicates of references included (distance 0, where
    the |q|² + |r|² - 2 q·r form, cdist's own on CPU, leaves a float32 residue before the root)."""
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(300, 16, generator=generator)
    queries = torch.cat([torch.randn(2500, 16, generator=generator), references[:7]])
    expected = torch.cdist(queries.double(), references.double()).amin(1)
    found = nearest_distance(queries, references).double()
    assert found.shape == (2507,) and queries.shape[0] > 2 * DISTANCE_BLOCK
    assert (found[:2500] - expected[:2500]).abs().max() < 1e-5
    assert (found**2 - expected**2).abs().max() < 1e-4
    assert found[2500:].max() < 3e-3  # the root of a float32 residue of about 1e-6


def test_no_graph_or_tensor_kept_between_images() -> None:
    """50 batches under inference_mode: no grad_fn on outputs, no tensors pile up, one timing per image."""
    refiner = F2padRefiner(guidance=NoveltyGuidance(pretrained=False, reference_size=64), steps=5)
    images, coarse = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 8, 8)

    def tensors_alive() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))

    with torch.inference_mode():
        refiner(images, output_of(coarse, 8, 24))
        before = tensors_alive()
        for _ in range(50):
            refined = refiner(images, output_of(coarse, 8, 24))
            assert refined.grad_fn is None and not refined.requires_grad
        del refined
        after = tensors_alive()
    assert after <= before
    assert len(refiner.seconds_per_image) == 51 * 2
    assert refiner.timing()["images"] == 102


class ShiftCounting(Detector):
    """Stub detector: the mean red channel on an 8-px grid; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        self.calls += 1
        coarse = torch.nn.functional.avg_pool2d(images[:, :1], 8)
        return output_of(coarse, 8, 16)


def test_shifted_views_rerun_the_attached_detector() -> None:
    assert view_offsets(2, 8) == [(0, 0), (0, 4), (4, 0), (4, 4)]
    detector, images = ShiftCounting(), torch.rand(2, 3, 64, 64)
    refiner = F2padRefiner(views=2, steps=3)
    with pytest.raises(RuntimeError, match="attach"):
        refiner(images, detector(images))
    refiner.attach(detector)
    detector.calls = 0
    refined = refiner(images, detector(images))
    assert refined.shape == (2, 1, 64, 64) and detector.calls == 1 + 3
    assert "detector" not in dict(refiner.named_children())


def test_config_builds_the_refiner() -> None:
    from hydra import compose, initialize_config_dir

    from anorefine.assembly import build_component
    from anorefine.config import register_configs

    register_configs()
    conf_dir = str(CONF_DIR)
    with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
        cfg = compose(
            "train", overrides=["refiner=f2pad", "refiner.guidance.pretrained=false", "refiner.steps=7"]
        )
    refiner = build_component(cfg.refiner)
    assert isinstance(refiner, F2padRefiner) and refiner.steps == 7
    assert isinstance(refiner.guidance, NoveltyGuidance)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        ["model=winclip", "model.image_size=96"],
        ["model=anomalyclip", "model.image_size=70", "prepare.max_steps=1", "prepare.aux_dataset=demo"],
    ],
    ids=["winclip", "anomalyclip"],
)
def test_train_py_refines_the_tiny_clip_detectors(model: list[str], demo_root: Path, tmp_path: Path) -> None:
    """train.py with refiner=f2pad over the zero-shot detectors: refined metrics and per-image timing."""
    args = [*model, "model.clip=tiny", "refiner=f2pad", "refiner.steps=3", f"dataset.root={demo_root}"]
    args += ["dataset.categories=[brick]", "trainer.enable_progress_bar=false", "logger=none"]
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    results = run.results
    refined, base = results["metrics"]["brick"]["refined"], results["metrics"]["brick"]["base"]
    assert refined != base
    for stage in (base, refined):
        assert 0.0 <= stage["pixel_iou_max"] <= 1.0 and 0.0 <= stage["boundary_f1"] <= 1.0
    timing = results["timings"]["per_category"]["brick"]["refiner"]
    tested = open_dataset("demo", demo_root).records("brick", "test")
    assert timing["images"] == len(tested) and timing["mean_s"] > 0
