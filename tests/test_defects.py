"""The annotated defect kinds (burn, warp, faint): masks as annotators draw them, areas, synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from anorefine.data.defects import (
    ANNOTATED_KINDS,
    DEFECT_KINDS,
    MAX_AREA,
    MIN_AREA,
    area_range,
    paint_defect,
    paint_float,
)
from anorefine.data.synthesis import AnomalySynthesizer
from anorefine.data.textures import load_texture, normal_image


@pytest.fixture(scope="module")
def textured() -> list[np.ndarray]:
    """Six 256² uint8 normal images of the three photograph textures."""
    images = []
    for name in ("brick", "grass", "gravel"):
        texture, tint = load_texture(name, 0)
        images += [normal_image(texture, tint, np.random.default_rng([i, 5])) for i in range(2)]
    return images


def _relative_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change over the mask, relative to its mean brightness."""
    before, after = before.astype(np.float64), after.astype(np.float64)
    return float(np.abs(after - before)[mask].mean() / before[mask].mean())


def test_new_kinds_are_appended_so_earlier_kinds_keep_their_random_streams() -> None:
    # the transfer dataset draws kind k from stream k + 2: earlier kinds' images must not move
    assert list(DEFECT_KINDS) == [
        *("scratch", "hole", "stain", "crack", "perlin", "cutpaste"),
        *("dent", "thread", "colour", "missing", "burn", "warp", "faint"),
    ]
    assert ANNOTATED_KINDS == ("burn", "warp", "faint")


def test_area_ranges_per_kind() -> None:
    assert area_range("faint") == (0.03, 0.10)
    for kind in ("burn", "warp", "scratch", "perlin", "missing"):
        assert area_range(kind) == (MIN_AREA, MAX_AREA)


@pytest.mark.parametrize("kind", ANNOTATED_KINDS)
def test_annotated_kinds_change_nothing_outside_one_mask_in_their_area(
    kind: str, textured: list[np.ndarray]
) -> None:
    low, high = area_range(kind)
    for i, image in enumerate(textured):
        rng = np.random.default_rng(i)
        painted, mask = paint_defect(image, kind, rng, textured[(i + 1) % len(textured)])
        assert np.array_equal(painted[~mask], image[~mask])  # outside the mask: the same bytes
        assert (painted != image).any(axis=2)[mask].mean() > 0.5  # inside: mostly changed
        assert low <= mask.mean() <= high
        assert ndimage.label(mask)[1] == 1  # one region, as an annotator draws it


@pytest.mark.parametrize("kind", ANNOTATED_KINDS)
def test_annotated_kinds_are_deterministic_by_seed(kind: str, textured: list[np.ndarray]) -> None:
    first = paint_defect(textured[0], kind, np.random.default_rng(3))
    again = paint_defect(textured[0], kind, np.random.default_rng(3))
    other = paint_defect(textured[0], kind, np.random.default_rng(4))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_burn_chars_a_small_core_in_a_wide_barely_changed_halo() -> None:
    base = np.full((256, 256, 3), 0.6, np.float32)
    for seed in range(20):
        painted, mask = paint_float(base, "burn", np.random.default_rng(seed))
        darkening = 1.0 - painted.mean(axis=2)[mask] / 0.6  # per masked pixel
        outer = (mask & ~ndimage.binary_erosion(mask))[mask]  # the mask's outermost pixels
        assert darkening.max() > 0.6  # the core: strongly darkened
        assert (darkening > 0.4).mean() < 0.5  # ...and small (the halo is 1.5-3x its radius)
        assert (darkening < 0.2).mean() > 0.45
        assert 0.005 < darkening[outer].mean() < 0.05  # the halo's edge: barely darker
        assert 0.005 < darkening.min() < 0.035  # no masked pixel untouched, the faintest 1-3%
        assert np.all(painted[~mask] == 0.6)


def test_warp_moves_the_texture_without_changing_its_colour(textured: list[np.ndarray]) -> None:
    flat = np.full((256, 256, 3), 0.4, np.float32)
    painted, mask = paint_float(flat, "warp", np.random.default_rng(0))
    assert mask.sum() > 300 and np.allclose(painted, flat, atol=1e-6)  # geometry only: flat stays flat
    shifts = []
    for i, image in enumerate(textured):
        base = image.astype(np.float32) / 255.0
        painted, mask = paint_float(base, "warp", np.random.default_rng(i))
        assert (np.abs(painted - base).max(axis=2)[mask] > 1.5 / 255).mean() > 0.5  # pixels moved
        shift = painted[mask].mean(axis=0) - base[mask].mean(axis=0)
        assert np.abs(shift).max() < 0.03  # colour kept (a bulge may enlarge a brighter detail)
        assert painted[mask].std() > 0.8 * base[mask].std()  # contrast kept (bilinear smooths a bit)
        shifts.append(shift)
    assert np.abs(np.mean(shifts, axis=0)).max() < 0.01


def test_faint_changes_a_large_region_by_four_to_eight_percent(textured: list[np.ndarray]) -> None:
    for i, image in enumerate(textured):
        painted, mask = paint_defect(image, "faint", np.random.default_rng(i))
        assert 0.03 <= mask.mean() <= 0.10
        assert 0.04 - 0.002 <= _relative_change(image, painted, mask) <= 0.08 + 0.002  # uint8 rounding
        assert np.array_equal(painted[~mask], image[~mask])


@pytest.mark.parametrize(
    ("area", "expected"),
    [((0.001, 0.04), (0.03, 0.04)), ((0.001, 0.02), (0.001, 0.02)), ((0.05, 0.5), (0.05, 0.10))],
)
def test_faint_meets_a_callers_area_range(area: tuple[float, float], expected: tuple[float, float]) -> None:
    base = np.random.default_rng(0).uniform(0.2, 0.8, (128, 96, 3)).astype(np.float32)
    for seed in range(6):
        _, mask = paint_float(base, "faint", np.random.default_rng(seed), area=area)
        assert expected[0] <= mask.mean() <= expected[1]


@pytest.mark.parametrize("kind", ["burn", "warp"])
def test_burn_and_warp_meet_the_synthesis_area_range(kind: str) -> None:
    base = np.random.default_rng(1).uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    for seed in range(6):
        painted, mask = paint_float(base, kind, np.random.default_rng(seed), area=(0.001, 0.04))
        assert 0.001 <= mask.mean() <= 0.04 and np.array_equal(painted[~mask], base[~mask])


def test_synthesis_draws_the_annotated_kinds_within_its_own_area() -> None:
    torch.manual_seed(0)
    pool = torch.rand(3, 3, 96, 96)
    images, masks = AnomalySynthesizer(kinds=[*ANNOTATED_KINDS, "perlin"], area=(0.001, 0.04))(pool, 12)
    areas = masks.mean(dim=(1, 2, 3))
    assert torch.all(areas >= 0.001) and torch.all(areas <= 0.04)
    for image, mask in zip(images, masks, strict=True):
        outside = mask.expand_as(image) == 0
        assert sum(torch.equal(image[outside], p[outside]) for p in pool) >= 1
    _, masks = AnomalySynthesizer(kinds=["faint"], area=(0.001, 0.04))(pool, 4)
    areas = masks.mean(dim=(1, 2, 3))
    assert torch.all(areas >= 0.03) and torch.all(areas <= 0.04)  # faint: its own range, narrowed
