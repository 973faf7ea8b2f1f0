"""PGT: group-by-group training, masks never read, contamination, ablation modes, synthesis, train.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY_RUN, run_train
from fakes import FakeDetector
from PIL import Image
from torch.utils.data import Dataset

from anorefine.curriculum.pgt import ProgressiveGroupTraining, random_windows, stream_groups
from anorefine.data.defects import DEFECT_KINDS
from anorefine.data.synthesis import AnomalySynthesizer
from anorefine.detectors.tiling import TiledDetector, Tiling
from anorefine.errors import AnorefineError, DataError
from anorefine.refiners.ard import ArdRefiner
from anorefine.refiners.baseline import BaselineRefiner
from anorefine.task import AnomalyTask

SIZE = 64
TINY_PGT = {"group_size": 4, "steps_per_group": 3, "batch_size": 4, "crop_size": 32, "synthetic_per_group": 4}


class TinyStream(Dataset):
    """Grey noise images; every third one has a bright square (exact mask). ``poison`` swaps in
    random masks and the labels they imply, which must change nothing but the metrics."""

    def __init__(self, count: int = 12, poison: bool = False) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = 0.5 + 0.05 * torch.randn(count, 3, SIZE, SIZE, generator=generator)
        self.masks = torch.zeros(count, 1, SIZE, SIZE)
        for i in range(0, count, 3):
            y, x = torch.randint(0, SIZE - 12, (2,), generator=generator).tolist()
            self.masks[i, :, y : y + 12, x : x + 12] = 1
            self.images[i, :, y : y + 12, x : x + 12] = 0.95
        self.labels = [int(m.any()) for m in self.masks]
        if poison:
            self.masks = (torch.rand(count, 1, SIZE, SIZE, generator=generator) > 0.7).float()
            self.labels = [1 - label for label in self.labels]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index].clamp(0, 1),
            "mask": self.masks[index],
            "label": self.labels[index],
            "has_mask": True,
            "index": index,
        }


class RefinerSnapshots(L.Callback):
    """Records the refiner's weights at the start of every test pass (one per group)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.refiner.state_dict().items()})


def trainer_factory(callbacks: list[L.Callback] | None = None, precision: str = "32-true"):
    def make_trainer(purpose: str = "evaluate", **overrides: Any) -> L.Trainer:
        """Like ``anorefine.run.trainer_factory``'s, with callbacks (a fit trainer runs by steps only)."""
        fit = (
            {"max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0} if purpose == "fit" else {}
        )
        settings = {
            **fit,
            "accelerator": "cpu",
            "precision": precision,
            "logger": False,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "callbacks": callbacks or [],
        }
        return L.Trainer(**{**settings, **overrides})

    return make_trainer


def run_pgt(
    stream: Dataset, callbacks: list[L.Callback] | None = None, precision: str = "32-true", **settings: Any
):
    L.seed_everything(0, verbose=False)
    task = AnomalyTask(FakeDetector(), ArdRefiner(width=16))
    extras = ProgressiveGroupTraining(**{**TINY_PGT, **settings}).evaluate(
        task, trainer_factory(callbacks, precision), stream, batch_size=4
    )
    return task, extras


def test_progressive_training_changes_the_weights_group_by_group() -> None:
    snapshots = RefinerSnapshots()
    task, extras = run_pgt(TinyStream(), [snapshots], first_group="base")
    assert len(snapshots.states) == 3 == len(extras["groups"])
    for before, after in zip(snapshots.states, snapshots.states[1:], strict=False):
        changed = [k for k in after if k in before and not torch.equal(before[k], after[k])]
        assert changed, "the ARD must train between groups"
    first = extras["groups"][0]
    assert first["refined_by"] == "base (untrained)"
    assert first["refined_pixel_ap"] == first["base_pixel_ap"]  # group 0 is refined by the untrained ARD
    assert len(extras["refined_pixel_ap_curve"]) == 3
    assert all("train_loss" in group for group in extras["groups"][:2])
    refined, base = (torch.cat(task.metrics[stage].anomaly_maps) for stage in ("refined", "base"))
    assert not torch.equal(refined, base)  # the trained ARD changed the maps of the later groups


def test_bf16_training_trains_and_scores_every_group() -> None:
    snapshots = RefinerSnapshots()
    task, extras = run_pgt(TinyStream(), [snapshots], precision="bf16-mixed")
    first, last = snapshots.states[0], snapshots.states[-1]
    assert any(k in first and not torch.equal(first[k], last[k]) for k in last), "the ARD must train"
    assert all(np.isfinite(g["train_loss"]) for g in extras["groups"] if "train_loss" in g)
    maps = torch.cat(task.metrics["refined"].anomaly_maps)
    assert len(maps) == 12 and maps.shape[-2:] == (SIZE, SIZE) and torch.isfinite(maps).all()


def test_poisoned_masks_change_no_refined_map() -> None:
    clean_task, clean = run_pgt(TinyStream())
    poisoned_task, poisoned = run_pgt(TinyStream(poison=True))
    clean_maps = torch.cat(clean_task.metrics["refined"].anomaly_maps)
    poisoned_maps = torch.cat(poisoned_task.metrics["refined"].anomaly_maps)
    assert torch.equal(clean_maps, poisoned_maps)
    assert [g["pseudo_normals"] for g in clean["groups"] if "pseudo_normals" in g] == [
        g["pseudo_normals"] for g in poisoned["groups"] if "pseudo_normals" in g
    ]
    assert clean["refined_pixel_ap_curve"] != poisoned["refined_pixel_ap_curve"]  # only the scores differ


def test_contamination_forces_anomalous_images_into_the_pool() -> None:
    stream = TinyStream()
    anomalous = {i for i, label in enumerate(stream.labels) if label}
    _, clean = run_pgt(stream)
    _, dirty = run_pgt(stream, contamination=0.5)
    for group in clean["groups"]:
        if "pseudo_normals" in group:
            assert not anomalous & set(group["pseudo_normals"])  # the detector keeps them out by itself
            assert group["forced_anomalous"] == []
    for group in dirty["groups"]:
        if "pseudo_normals" not in group:
            continue
        available = anomalous & set(group["indices"])
        assert len(group["forced_anomalous"]) == min(len(available), 1)  # round(0.5 * pool of 2)
        assert set(group["forced_anomalous"]) <= available & set(group["pseudo_normals"])
        assert group["pool_anomalous"] >= len(group["forced_anomalous"])


@pytest.mark.parametrize("mode", ["offline", "scratch"])
def test_ablation_modes_score_every_group(mode: str) -> None:
    task, extras = run_pgt(TinyStream(), mode=mode)
    assert extras["mode"] == mode and len(extras["refined_pixel_ap_curve"]) == 3
    assert sum(len(g["indices"]) for g in extras["groups"]) == 12
    assert len(torch.cat(task.metrics["refined"].anomaly_maps)) == 12  # each image tested exactly once
    if mode == "offline":
        assert all(g["refined_by"] == "offline" and "pseudo_normals" in g for g in extras["groups"])


def test_stream_order_and_groups() -> None:
    shuffled = stream_groups(10, 4, "shuffle", seed=0)
    assert [len(g) for g in shuffled] == [4, 4, 2]
    assert sorted(i for g in shuffled for i in g) == list(range(10))
    assert shuffled == stream_groups(10, 4, "shuffle", seed=0)
    assert stream_groups(5, 2, "dataset", seed=0) == [[0, 1], [2, 3], [4]]
    with pytest.raises(AnorefineError, match="order"):
        stream_groups(5, 2, "random", seed=0)


def test_pgt_needs_a_trainable_refiner() -> None:
    task = AnomalyTask(FakeDetector(), BaselineRefiner())
    with pytest.raises(AnorefineError, match="trainable refiner"):
        ProgressiveGroupTraining(**TINY_PGT).evaluate(task, trainer_factory(), TinyStream(), 4)


@pytest.mark.parametrize("kind", list(DEFECT_KINDS))
def test_synthesis_changes_only_masked_pixels(kind: str) -> None:
    torch.manual_seed(0)
    pool = torch.rand(2, 3, SIZE, SIZE)
    images, masks = AnomalySynthesizer(kinds=[kind], area=(0.002, 0.05))(pool, 6)
    assert images.shape == (6, 3, SIZE, SIZE) and masks.shape == (6, 1, SIZE, SIZE)
    areas = masks.mean(dim=(1, 2, 3))
    assert torch.all(areas >= 0.002) and torch.all(areas <= 0.05)
    for image, mask in zip(images, masks, strict=True):
        outside = mask.expand_as(image) == 0
        sources = [p for p in pool if torch.equal(image[outside], p[outside])]
        assert len(sources) == 1 and not torch.equal(image, sources[0])


def test_synthesis_never_draws_an_excluded_kind() -> None:
    synthesizer = AnomalySynthesizer(kinds=["perlin", "dent", "thread"], exclude=["dent"])
    assert synthesizer.kinds == ["perlin", "thread"]
    with pytest.raises(DataError, match="leaves none"):
        AnomalySynthesizer(kinds=["dent"], exclude=["dent"])
    with pytest.raises(DataError, match="'dnet' is unknown"):
        AnomalySynthesizer(kinds=["dnet"])


def test_synthesis_reads_a_texture_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    torch.manual_seed(0)
    images, masks = AnomalySynthesizer(texture_dir=str(tmp_path))(torch.full((1, 3, SIZE, SIZE), 0.5), 2)
    assert masks.sum() > 0 and not torch.equal(images, torch.full_like(images, 0.5))


class RecordingSynthesizer(AnomalySynthesizer):
    """Paints as always and records the shape of every pool it paints on."""

    def __init__(self) -> None:
        super().__init__()
        self.pools: list[tuple[int, ...]] = []

    def __call__(self, pool: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.pools.append(tuple(pool.shape))
        return super().__call__(pool, count)


@pytest.mark.parametrize(("synthesis_on", "side"), [("tile", 32), ("image", SIZE)])
def test_a_tiled_detector_gets_its_synthetic_anomalies_painted_on_tile_windows(
    synthesis_on: str, side: int
) -> None:
    L.seed_everything(0, verbose=False)
    synthesizer = RecordingSynthesizer()
    detector = TiledDetector(FakeDetector(), Tiling(tile=32, overlap=0, window="crop"))
    task = AnomalyTask(detector, ArdRefiner(width=16))
    pgt = ProgressiveGroupTraining(**TINY_PGT, synthesis_on=synthesis_on, synthesis=synthesizer)
    extras = pgt.evaluate(task, trainer_factory(), TinyStream(), batch_size=4)
    # groups 0 and 1 train (group 0 on itself), each painting 4 images on 4 windows or whole images
    expected_count = 4 if synthesis_on == "tile" else 2  # windows, or the pool's half of a group of 4
    assert synthesizer.pools == [(expected_count, 3, side, side)] * 2
    assert len(extras["groups"]) == 3 and all("train_loss" in group for group in extras["groups"][:2])


def test_synthesis_on_tiles_is_the_whole_image_for_an_untiled_detector() -> None:
    synthesizer = RecordingSynthesizer()
    run_pgt(TinyStream(), synthesis_on="tile", synthesis=synthesizer)
    assert {shape[-2:] for shape in synthesizer.pools} == {(SIZE, SIZE)}


def test_random_windows_are_cut_in_turn_from_each_image() -> None:
    images = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)  # every value unique
    torch.manual_seed(0)
    windows = random_windows(images, 5, 4)
    assert windows.shape == (5, 3, 4, 4)
    for i, window in enumerate(windows):
        source = images[i % 2]
        found = [
            (y, x) for y in range(7) for x in range(9) if torch.equal(source[:, y : y + 4, x : x + 4], window)
        ]
        assert len(found) == 1


def short_pgt(group_size: int, steps: int, synthetic: int, crop: int) -> list[str]:
    """Overrides for a PGT short enough for a subprocess test."""
    return [
        f"curriculum.group_size={group_size}",
        f"curriculum.steps_per_group={steps}",
        f"curriculum.synthetic_per_group={synthetic}",
        f"curriculum.crop_size={crop}",
    ]


def run_ard_pgt(demo_root: Path, run_dir: Path, category: str, *overrides: str) -> Any:
    """``python train.py refiner=ard curriculum=pgt`` on one demo category, checked to succeed."""
    args = [f"dataset.root={demo_root}", f"dataset.categories=[{category}]", "refiner=ard", "curriculum=pgt"]
    run = run_train([*args, *overrides], run_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_train_py_runs_ard_with_pgt(demo_root: Path, tmp_path: Path) -> None:
    run = run_ard_pgt(
        demo_root,
        tmp_path / "pgt",
        "grass",
        *TINY_RUN,
        *short_pgt(group_size=26, steps=2, synthetic=4, crop=32),
    )
    results = run.results
    assert results["refiner"] == "ard" and results["method"] == "ard+pgt" and results["refines"] is True
    extras = results["curriculum"]["grass"]  # the per-group curve reaches results.json
    assert extras == json.loads((run.run_dir / "categories" / "grass.json").read_text())["curriculum"]
    assert len(extras["refined_pixel_ap_curve"]) == 2 and extras["mode"] == "progressive"
    metrics = results["metrics"]["grass"]
    assert metrics["refined"]["pixel_ap"] != metrics["base"]["pixel_ap"]


@pytest.mark.slow
def test_train_py_runs_ard_on_winclip(demo_root: Path, tmp_path: Path) -> None:
    tiny_winclip = ["model=winclip", "model.image_size=64", "model.clip=tiny"]
    quiet = ["trainer.enable_progress_bar=false", "logger=none"]
    pgt = short_pgt(group_size=26, steps=1, synthetic=2, crop=0)
    run = run_ard_pgt(demo_root, tmp_path / "winclip", "brick", *tiny_winclip, *quiet, *pgt)
    assert run.results["model"] == "winclip" and run.results["refiner"] == "ard"


@pytest.mark.slow
def test_the_default_run_lifts_pixel_ap_without_costing_pixel_auroc(demo_root: Path, tmp_path: Path) -> None:
    """`python train.py refiner=ard curriculum=pgt` with every default, on the demo's hardest category
    for pixel AUROC (grass): at least +10 pixel-AP points and at most -0.5 pixel-AUROC point."""
    run = run_ard_pgt(
        demo_root, tmp_path / "default", "grass", "trainer.enable_progress_bar=false", "logger=none"
    )
    base, refined = run.results["metrics"]["grass"]["base"], run.results["metrics"]["grass"]["refined"]
    assert refined["pixel_ap"] - base["pixel_ap"] >= 0.10, (base, refined)
    assert refined["pixel_auroc"] - base["pixel_auroc"] >= -0.005, (base, refined)


def test_paper_rule_scores_group_zero_with_the_base_and_group_g_with_the_ard_of_groups_before() -> None:
    """refiner=ard_paper's PGT: group 0 keeps the base map; every later group is refined by the ARD
    trained on the groups before it (the decoder's own map, no floor)."""
    L.seed_everything(0, verbose=False)
    task = AnomalyTask(
        FakeDetector(), ArdRefiner(width=16, rgb_skip=False, support_gain=None, residual=False)
    )
    extras = ProgressiveGroupTraining(**TINY_PGT, first_group="base").evaluate(
        task, trainer_factory(), TinyStream(), batch_size=4
    )
    groups = extras["groups"]
    assert [g["refined_by"] for g in groups] == ["base (untrained)", "group 0", "group 1"]
    refined, base = (task.metrics[stage].anomaly_maps for stage in ("refined", "base"))
    assert torch.equal(refined[0], base[0])  # the first batch is group 0 (group_size = batch_size = 4)
    assert all(not torch.equal(r, b) for r, b in zip(refined[1:], base[1:], strict=True))
    assert "train_loss" in groups[0] and "train_loss" in groups[1] and "train_loss" not in groups[2]
