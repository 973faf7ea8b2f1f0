"""ARD: exact identity when untrained, shapes for every stride, bounded residual, image-score switch."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_with
from fakes import FakeDetector, fake_output

from anorefine.errors import AnorefineError
from anorefine.refiners.ard import ArdRefiner, stage_sizes
from anorefine.refiners.baseline import BaselineRefiner
from anorefine.task import AnomalyTask


@pytest.mark.parametrize(("size", "stride"), [(64, 8), (56, 14), (64, 16), (70, 14), (48, 16)])
def test_untrained_ard_is_exactly_the_none_map(size: int, stride: int) -> None:
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    output = fake_output(2, size, stride)
    refined = ArdRefiner()(images, output)
    assert refined.shape == (2, 1, size, size)
    assert torch.equal(refined, BaselineRefiner()(images, output))


def test_identity_holds_whatever_the_stream_statistics() -> None:
    images, output = torch.rand(1, 3, 64, 64), fake_output(1, 64, 8)
    ard = ArdRefiner()
    ard.calibrate(output.anomaly_map * 7 + 3, output.features * 5)
    assert torch.equal(ard(images, output), BaselineRefiner()(images, output))


@pytest.mark.parametrize(("size", "stride", "stages"), [(64, 8, 2), (56, 14, 3), (64, 16, 3), (518, 14, 3)])
def test_stages_double_the_grid_and_the_last_head_reaches_the_input(
    size: int, stride: int, stages: int
) -> None:
    grid = round(size / stride)
    sizes = stage_sizes((grid, grid), (size, size), None)
    assert len(sizes) == stages
    assert sizes == [(grid * 2**k, grid * 2**k) for k in range(1, stages + 1)]
    assert 2 * sizes[-1][0] >= size  # the last pixel-shuffle head covers the input, then is resized


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"attention": False, "bi_blocks": 0, "rgb_skip": False},
        {"bi_blocks": 2, "stages": 1, "width": 16},
        {"support_gain": None},
        {"support_gain": None, "residual": False},
        {"support_gain": None, "delta_range": None},
    ],
)
def test_every_variant_gives_full_size_maps_and_trains(settings: dict) -> None:
    images, output = torch.rand(2, 3, 56, 56), fake_output(2, 56, 14)
    ard = ArdRefiner(**settings)
    ard.calibrate(output.anomaly_map, output.features)
    ard.start_training()
    estimates = ard.estimates(images, output)
    assert estimates[-1].shape == (2, 1, 56, 56)
    loss = sum(ard.probability(e).mean() for e in estimates)
    loss.backward()
    optimizer = torch.optim.SGD(ard.parameters(), lr=1.0)
    before = ard(images, output).detach()
    optimizer.step()
    after = ard(images, output).detach()
    assert after.shape == (2, 1, 56, 56) and torch.isfinite(after).all()
    assert not torch.equal(before, after)


def test_residual_is_bounded_and_monotonic() -> None:
    delta = torch.tensor([-1e6, -1.0, 0.0, 1.0, 1e6]).view(1, 1, 1, 5)
    bounded = ArdRefiner(delta_range=(-2.0, 10.0), center=False).bound(delta).flatten()
    assert bounded[2] == 0 and bounded[0] >= -2.0 and bounded[-1] <= 10.0
    assert torch.all(bounded[1:] > bounded[:-1])


def test_residual_is_centred_on_each_image_median() -> None:
    delta = torch.stack([torch.full((1, 4, 4), 5.0), torch.arange(16.0).view(1, 4, 4)])
    centred = ArdRefiner(delta_range=None).bound(delta)
    assert torch.equal(centred[0], torch.zeros(1, 4, 4))  # a uniform shift is removed
    assert centred[1].flatten().median() == 0


def test_image_score_max_uses_the_refined_map_for_the_refined_stage_only() -> None:
    detector = FakeDetector()
    images = torch.rand(4, 3, 64, 64)
    batch = {
        "image": images,
        "mask": torch.zeros(4, 1, 64, 64),
        "label": torch.tensor([0, 1, 0, 1]),
        "has_mask": torch.ones(4, dtype=torch.bool),
    }
    batch["mask"][1, :, 10:20, 10:20] = 1
    batch["mask"][3, :, 30:40, 5:9] = 1
    task = AnomalyTask(detector, ArdRefiner(image_score="max"))
    with torch.no_grad():  # as under trainer.test
        task.test_step(batch, 0)
    detector_scores = detector(images).image_score
    refined = task.metrics["refined"].image_scores[0]
    assert torch.allclose(task.metrics["base"].image_scores[0], detector_scores)
    assert torch.allclose(refined, task.metrics["refined"].anomaly_maps[0].flatten(1).amax(1))


def test_unknown_image_score_is_refused() -> None:
    with pytest.raises(AnorefineError, match=r"^refiner\.image_score="):
        ArdRefiner(image_score="mean")


def test_support_head_is_the_base_map_until_trained_then_never_lowers_a_pixel() -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    output = fake_output(2, 64, 8)
    refiner = ArdRefiner(support_gain=2.0)
    base = BaselineRefiner()(images, output)
    assert torch.equal(refiner(images, output), base)  # untrained: exactly the base map
    refiner.calibrate(output.anomaly_map, output.features)
    refiner.start_training()
    refined = refiner(images, output)
    assert not torch.equal(refined, base) and bool((refined >= base).all())
    above = base - refiner.map_mean
    assert bool((refined - base <= 2.0 * above.clamp_min(0) + 1e-6).all())  # at most gain x the excess
    assert torch.equal(refined[above <= 0], base[above <= 0])  # below the stream mean: untouched


def test_inference_runs_channels_last_training_the_default_layout_with_equal_maps() -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    output = fake_output(2, 64, 8)
    refiner = ArdRefiner()
    refiner.calibrate(output.anomaly_map, output.features)
    refiner.start_training()
    trained_layout = refiner(images, output).detach()  # autograd on, as in training
    convs = [p for p in refiner.network.parameters() if p.dim() == 4]
    assert all(p.is_contiguous() for p in convs)
    with torch.inference_mode():  # as in a test loop
        inference_layout = refiner(images, output)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert torch.allclose(
        inference_layout, trained_layout, rtol=1e-5, atol=1e-6 * float(trained_layout.abs().max())
    )
    loss = sum(estimate.sum() for estimate in refiner.estimates(images, output))
    loss.backward()  # after a test pass the weights still train, in the default layout again
    assert all(p.is_contiguous() and p.grad is not None for p in convs)


PAPER_ARD = {"rgb_skip": False, "support_gain": None, "residual": False}  # conf/refiner/ard_paper.yaml


def test_paper_ard_reads_no_pixel_cues_is_the_base_until_trained_then_its_own_calibrated_map() -> None:
    """The paper's decoder: score map + features only (no cue channels); untrained, the base map; trained,
    an affine (so rank-preserving) image of its last stage's output, free to lower pixels (no floor)."""
    images, output = torch.rand(2, 3, 64, 64), fake_output(2, 64, 8)
    ard = ArdRefiner(**PAPER_ARD)
    assert ard.cue_channels == 0 and ard.pixel_cues(images, output.anomaly_map) is None
    ard.calibrate(output.anomaly_map, output.features)
    base = BaselineRefiner()(images, output)
    assert torch.equal(ard(images, output), base)
    ard.start_training()
    refined = ard(images, output)
    last_stage = ard.estimates(images, output)[-1]
    assert torch.allclose(refined, ard.map_mean + ard.map_scale * last_stage, atol=1e-5)
    assert bool((refined < base).any()) and bool((refined > base).any())


def test_the_paper_preset_composes_its_decoder_and_pgt_group_rule() -> None:
    cfg = compose_with(["refiner=ard_paper"])
    default = compose_with(["refiner=ard", "curriculum=pgt"])
    assert cfg.refiner.name == "ard_paper" and cfg.refiner.guidance is None
    assert cfg.curriculum.name == "pgt"  # the one switch selects PGT itself
    assert {key: cfg.refiner[key] for key in PAPER_ARD} == PAPER_ARD
    assert cfg.curriculum.first_group == "base" and default.curriculum.first_group == "self"
    assert default.refiner.rgb_skip and default.refiner.support_gain == 2.0
