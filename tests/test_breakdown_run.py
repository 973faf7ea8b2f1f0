"""Breakdowns (per defect kind, per defect size) and bootstrap intervals of a run: the task's
``compute_all`` against direct recomputations, the JSON records, the printed tables, and end to end
through train.py (results.json, report.html, resume)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, run_train
from omegaconf import OmegaConf

from anorefine import data
from anorefine.datasets import open_dataset
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.map_files import read_map
from anorefine.metrics import (
    compute_metrics,
    delta_intervals,
    interval,
    kind_metrics,
    size_metrics,
)
from anorefine.metrics.bootstrap import BootstrapSettings
from anorefine.refiners.baseline import BaselineRefiner
from anorefine.results import (
    category_intervals,
    compact_replicates,
    format_breakdowns,
    format_kinds,
    format_sizes,
    format_table,
    interval_text,
    mean_breakdown,
    mean_intervals,
)
from anorefine.run import bootstrap_settings, defect_kinds
from anorefine.run_folder import RESULTS_FORMAT, validate_results, write_json_atomic
from anorefine.task import AnomalyTask

SIZE = 32
#: 24 images: 8 good, then kinds a, b, c (c: regions only in the first two images of the kind)
KINDS = ["good", "a", "b", "c"] * 6
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_iou_max", "aupro", "pro_compat")


class BrightDetector(Detector):
    """A coarse map (1/4 of the input) that is each cell's mean brightness: defects are bright."""

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        coarse = F.avg_pool2d(images.mean(1, keepdim=True), 4)
        return DetectorOutput(coarse, coarse.flatten(1).amax(1), coarse, 4, 4)


def make_batches(seed: int = 0, count: int = 24, batch_size: int = 5) -> list[dict[str, Any]]:
    """Images with bright defects of several sizes (1 px up to 10x12 px of 32x32) by ``KINDS``."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, 1, SIZE, SIZE), dtype=np.float32)
    for index in range(count):
        if KINDS[index] == "good":
            continue
        top, left = rng.integers(2, SIZE - 14, size=2)
        height, width = rng.integers(1, 12, size=2)
        masks[index, 0, top : top + height, left : left + width] = 1
        if index % 3 == 0:
            masks[index, 0, SIZE - 2, SIZE - 2] = 1  # a 1-pixel region (< 0.1 % of 32² is 1 px)
    images = rng.random((count, 3, SIZE, SIZE)).astype(np.float32) * 0.6 + masks * rng.random() * 0.8
    batches = []
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        batches.append(
            {
                "image": torch.from_numpy(images[part]),
                "mask": torch.from_numpy(masks[part]),
                "label": torch.from_numpy(
                    (masks[part].reshape(masks[part].shape[0], -1).max(1) > 0).astype(int)
                ),
                "has_mask": torch.ones(images[part].shape[0], dtype=torch.bool),
                "index": torch.arange(start, min(start + batch_size, count)),
            }
        )
    return batches


def run_task(batches: list[dict[str, Any]], **options: Any) -> AnomalyTask:
    """A task (base map blurred σ=4, refined σ=1) that has tested ``batches`` in two passes, the
    second in reverse order, as a curriculum may."""
    options = {"defect_kinds": KINDS.__getitem__, "breakdown": True, **options}
    task = AnomalyTask(BrightDetector(), options.pop("refiner", BaselineRefiner(sigma=1.0)), **options)
    with torch.no_grad():
        for batch in as_tested(batches):
            task.test_step(batch, 0)
    return task


def as_tested(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches as ``run_task`` tests them: the first half, then the rest in reverse."""
    half = len(batches) // 2
    return [*batches[:half], *reversed(batches[half:])]


def stacked(batches: list[dict[str, Any]], task: AnomalyTask) -> dict[str, torch.Tensor]:
    """Every image's base and refined map, scores, mask and label, in dataset order."""
    base, refined, base_scores, refined_scores = [], [], [], []
    with torch.no_grad():
        for batch in batches:
            maps = task.predict_maps(batch["image"])
            base.append(maps[0][:, 0])
            refined.append(maps[1][:, 0])
            base_scores.append(maps[2])
            refined_scores.append(task.refiner.image_score(maps[1], maps[2]))
    return {
        "base": torch.cat(base),
        "refined": torch.cat(refined),
        "base_scores": torch.cat(base_scores),
        "refined_scores": torch.cat(refined_scores),
        "masks": torch.cat([b["mask"][:, 0] > 0 for b in batches]),
        "labels": torch.cat([b["label"] for b in batches]),
    }


def test_kinds_sizes_and_deltas_equal_direct_recomputations() -> None:
    batches = make_batches()
    task = run_task(batches, bootstrap=BootstrapSettings(200, 0.9, 11))
    results = task.compute_all()
    every = stacked(batches, task)
    kinds = np.array(KINDS)
    assert set(results.breakdown["kinds"]) == {"a", "b", "c"}
    for kind, entry in results.breakdown["kinds"].items():
        chosen = torch.from_numpy(np.flatnonzero((kinds == "good") | (kinds == kind)))
        assert (entry["images"], entry["defective"]) == (12, 6)
        for stage in ("base", "refined"):
            expected = compute_metrics(
                every[stage][chosen],
                every["masks"][chosen],
                every[f"{stage}_scores"][chosen],
                every["labels"][chosen],
            )
            assert entry[stage]["boundary_f1"] is None  # not computed per kind
            for key in ("image_auroc", "image_ap", *PIXEL_KEYS):
                assert entry[stage][key] == pytest.approx(expected[key], abs=1e-9), (kind, stage, key)
    for stage in ("base", "refined"):
        expected = size_metrics([every[stage]], [every["masks"]])
        for key, entry in results.breakdown["sizes"].items():
            assert entry["regions"] == expected[key]["regions"] and entry["pixels"] == expected[key]["pixels"]
            for metric in ("pixel_auroc", "pixel_ap", "aupro"):
                assert entry[stage][metric] == pytest.approx(expected[key][metric], abs=1e-9)
    assert results.breakdown["sizes"]["small"]["regions"] >= 6  # the 1-pixel regions
    assert results.breakdown["sizes"]["small"]["label"] == "<0.1%"
    order = torch.tensor([int(i) for batch in as_tested(batches) for i in batch["index"]])
    assert not torch.equal(order, torch.arange(len(KINDS)))  # the draws follow the tested order
    tested = {key: values[order] for key, values in every.items()}
    direct = delta_intervals(
        [tested["base"]], [tested["refined"]], [tested["masks"]], tested["base_scores"],
        tested["refined_scores"], tested["labels"], [KINDS[i] for i in order],
        BootstrapSettings(200, 0.9, 11),
    )  # fmt: skip
    assert set(results.deltas.views) == set(direct.views)
    assert {"all", "kind/a", "kind/b", "kind/c", "size/small"} <= set(direct.views)
    for view, metrics in direct.views.items():
        for key, values in metrics.items():
            np.testing.assert_allclose(results.deltas.views[view][key], values, atol=1e-12, equal_nan=True)
    assert set(results.seconds) == {"metrics_s", "breakdown_s", "bootstrap_s"}
    assert task.metrics["base"].anomaly_maps == [] and task._indices == []  # reset


def test_original_resolution_parts_of_different_sizes() -> None:
    """eval.resolution=original: every image is its own part, at its own size."""
    batches = make_batches(seed=1)
    sizes = {index: (SIZE + 8 * (index % 2), SIZE + 4 * (index % 2)) for index in range(len(KINDS))}
    all_masks = torch.cat([b["mask"] for b in batches])

    def original(index: int) -> torch.Tensor:
        return F.interpolate(all_masks[index : index + 1], size=sizes[index], mode="nearest")[0, 0] > 0

    task = run_task(batches, original_masks=original, bootstrap=BootstrapSettings(100, 0.95, 3))
    order = torch.cat(task._indices).tolist()  # each batch's images grouped by size
    assert sorted(order) == list(range(len(KINDS))) and order != [int(i) for b in batches for i in b["index"]]
    base = task.metrics["base"]
    parts, masks = list(base.anomaly_maps), list(base.gt_masks)  # what compute_all reads
    scores, labels = torch.cat(base.image_scores), torch.cat(base.labels)
    assert len({tuple(p.shape[1:]) for p in parts}) == 2  # two original sizes
    assert len(parts) == 2 * len(batches)  # a batch's images of one size form one part
    results = task.compute_all()
    expected = kind_metrics(parts, masks, scores, labels, [KINDS[i] for i in order])
    for kind, entry in results.breakdown["kinds"].items():
        for key in ("image_auroc", "image_ap", *PIXEL_KEYS):
            assert entry["base"][key] == pytest.approx(expected[kind][key], abs=1e-9)
    by_size = size_metrics(parts, masks)
    assert {k: v["regions"] for k, v in results.breakdown["sizes"].items()} == {
        k: v["regions"] for k, v in by_size.items()
    }
    assert "all" in results.deltas.views and "size/large" in results.deltas.views


def test_a_refiner_that_returns_the_base_map_has_no_deltas() -> None:
    task = run_task(make_batches(), refiner=BaselineRefiner(), bootstrap=BootstrapSettings(100, 0.95, 0))
    results = task.compute_all()
    assert results.deltas is None and "bootstrap_s" not in results.seconds
    for entry in [*results.breakdown["kinds"].values(), *results.breakdown["sizes"].values()]:
        assert entry["refined"] == entry["base"]
    assert results.metrics["refined"] == results.metrics["base"]


def test_without_masks_and_without_defective_images() -> None:
    batches = make_batches()
    for batch in batches:
        batch["has_mask"] = batch["label"] == 0  # defective images without a mask: image labels only
    results = run_task(batches, bootstrap=BootstrapSettings(100, 0.95, 0)).compute_all()
    assert results.breakdown["sizes"] == {}
    for entry in results.breakdown["kinds"].values():
        assert entry["base"]["image_auroc"] is not None and entry["base"]["pixel_ap"] is None
    assert set(results.deltas.views) == {"all", "kind/a", "kind/b", "kind/c"}
    assert set(results.deltas.views["all"]) == {"image_auroc", "image_ap"}
    record = category_intervals(results.deltas, 100, 0, 5)
    assert set(record["delta"]) == {"image_auroc", "image_ap"} and record["sizes"] == {}

    normal = make_batches()
    for batch in normal:
        batch["mask"] = torch.zeros_like(batch["mask"])
        batch["label"] = torch.zeros_like(batch["label"])
    task = run_task(normal, defect_kinds=lambda index: "good", bootstrap=BootstrapSettings(100, 0.95, 0))
    results = task.compute_all()
    assert results.breakdown == {"kinds": {}, "sizes": {}} and results.deltas.views == {}
    assert category_intervals(results.deltas, 100, 0, 5)["delta"] == {}


def test_options_off() -> None:
    batches = make_batches()
    results = run_task(batches, breakdown=False, bootstrap=None).compute_all()
    assert results.breakdown is None and results.deltas is None and list(results.seconds) == ["metrics_s"]
    only_all = run_task(batches, breakdown=False, bootstrap=BootstrapSettings(50, 0.95, 0)).compute_all()
    assert list(only_all.deltas.views) == ["all"]
    plain = AnomalyTask(BrightDetector(), BaselineRefiner(sigma=1.0))  # as predict mode and older callers
    with torch.no_grad():
        plain.test_step({k: v for k, v in batches[0].items() if k != "index"}, 0)
    assert set(plain.compute_results()) == {"base", "refined"}


def test_run_settings_per_category() -> None:
    cfg = OmegaConf.create({"eval": {"bootstrap": {"replicates": 1000, "level": 0.95, "seed": 2}}})
    brick, grass = (
        bootstrap_settings(cfg.eval.bootstrap, "brick"),
        bootstrap_settings(cfg.eval.bootstrap, "grass"),
    )
    assert brick.replicates == 1000 and brick.level == 0.95 and brick.seed != grass.seed
    cfg.eval.bootstrap.replicates = 0
    assert bootstrap_settings(cfg.eval.bootstrap, "brick") is None
    records = [
        data.ImageRecord(Path("a.png"), None, 0, "good", "c"),
        data.ImageRecord(Path("b.png"), Path("b_mask.png"), 1, "hole", "c"),
    ]
    assert defect_kinds(records) == ["good", "hole"]


def test_interval_records_and_the_interval_of_the_mean() -> None:
    batches = make_batches()
    settings = BootstrapSettings(300, 0.95, 4)
    deltas = run_task(batches, bootstrap=settings).compute_all().deltas
    record = category_intervals(deltas, 300, 0, 4)
    for view in (record["delta"], *record["kinds"].values(), *record["sizes"].values()):
        for found in view.values():
            assert found["low"] <= found["high"] and 0 < found["valid"] <= 300
            assert found["contains_zero"] == (found["low"] <= 0 <= found["high"])
    assert record["delta"]["pixel_ap"]["low"] == interval(deltas.views["all"]["pixel_ap"], 0.95)[0]
    compact = compact_replicates(deltas)
    assert set(compact) == set(record["delta"]) and len(compact["pixel_ap"]) == 300
    assert all(v is None or round(v, 6) == v for v in compact["aupro"])
    other = {key: [None if v is None else v / 2 for v in values] for key, values in compact.items()}
    mean = mean_intervals({"x": compact, "y": other}, 0.95, 300, 0)
    averaged = (np.array(compact["pixel_ap"], dtype=float) + np.array(other["pixel_ap"], dtype=float)) / 2
    assert (mean["delta"]["pixel_ap"]["low"], mean["delta"]["pixel_ap"]["high"]) == interval(averaged, 0.95)
    assert mean["categories"] == ["x", "y"] and mean["kinds"] == mean["sizes"] == {}
    assert set(
        mean_intervals({"x": compact, "y": {"pixel_ap": other["pixel_ap"]}}, 0.95, 300, 0)["delta"]
    ) == {"pixel_ap"}  # a metric some category lacks has no interval of the mean


def entry(value: float, delta: float, keys: tuple[str, ...] = ("pixel_ap", "pixel_auroc", "aupro")) -> dict:
    return {"base": dict.fromkeys(keys, value), "refined": dict.fromkeys(keys, value + delta)}


def zero_record(low: float, high: float) -> dict[str, Any]:
    return {"low": low, "high": high, "contains_zero": low <= 0 <= high, "valid": 100}


def test_mean_breakdown_averages_the_categories_that_have_it() -> None:
    hole_x = {"images": 10, "defective": 4, **entry(0.2, 0.1)}
    hole_y = {"images": 12, "defective": 6, **entry(0.4, 0.1)}
    crack_y = {"images": 8, "defective": 3, **entry(0.5, 0.0)}
    breakdown = {
        "x": {
            "kinds": {"hole": hole_x},
            "sizes": {"small": {"label": "<0.1%", "regions": 0, "pixels": 0, **entry(0.0, 0.0)}},
        },
        "y": {
            "kinds": {"hole": hole_y, "crack": crack_y},
            "sizes": {"small": {"label": "<0.1%", "regions": 5, "pixels": 9, **entry(0.1, 0.2)}},
        },
    }
    mean = mean_breakdown(breakdown)
    assert list(mean["kinds"]) == ["crack", "hole"]
    hole = mean["kinds"]["hole"]
    assert (hole["categories"], hole["images"], hole["defective"]) == (["x", "y"], 22, 10)
    assert hole["base"]["pixel_ap"] == pytest.approx(0.3) and hole["refined"]["pixel_ap"] == pytest.approx(
        0.4
    )
    assert mean["kinds"]["crack"]["categories"] == ["y"]
    assert mean["sizes"]["small"]["categories"] == ["y"] and mean["sizes"]["small"]["regions"] == 5


def test_the_printed_tables() -> None:
    metrics = {"brick": entry(0.1, 0.15, ("pixel_ap", "aupro"))}
    intervals = {
        "brick": {
            "level": 0.95,
            "replicates": 1000,
            "seed": 0,
            "delta": {"pixel_ap": zero_record(0.05, 0.25)},
        }
    }
    rows = [
        line.split()
        for line in format_table(metrics, ("pixel_ap", "aupro"), intervals=intervals).splitlines()
    ]
    assert rows[2:] == [
        ["brick", "base", "10.00", "10.00"],
        ["brick", "refined", "25.00", "25.00"],
        ["brick", "Δ", "+15.00", "+15.00"],
        ["brick", "95%", "CI", "[+5.00,+25.0]"],  # aupro has no interval: an empty cell
    ]
    assert interval_text(zero_record(-0.004, 0.0213)) == "[-0.40,+2.13]~"
    assert interval_text(zero_record(0.0, 0.0)) == "[0,0]~" and interval_text(None) == ""
    breakdown = {
        "brick": {
            "kinds": {"hole": {"images": 28, "defective": 8, **entry(0.3, 0.1)}},
            "sizes": {
                "small": {"label": "<0.1%", "regions": 0, "pixels": 0, **entry(0.0, 0.0)},
                "large": {"label": ">1%", "regions": 5, "pixels": 900, **entry(0.5, -0.02)},
            },
        },
        "mean": {},
    }
    found = {
        "brick": {
            "level": 0.95, "replicates": 1000, "seed": 0, "delta": {},
            "kinds": {"hole": {"pixel_ap": zero_record(0.05, 0.15)}},
            "sizes": {"large": {"pixel_ap": zero_record(-0.05, 0.01), "aupro": zero_record(-0.03, -0.01)}},
        }
    }  # fmt: skip
    kinds = format_kinds(breakdown, found).splitlines()
    assert kinds[0].split() == [
        "category",
        "kind",
        "images",
        "pixel_ap",
        "pixel_ap",
        "Δ",
        "pixel_auroc",
        "Δ",
        "aupro",
        "Δ",
    ]
    assert kinds[2].split() == [
        "brick",
        "hole",
        "28",
        "30.00",
        "→",
        "40.00",
        "+10.00",
        "[+5.00,+15.0]",
        "+10.00",
        "+10.00",
    ]
    sizes = format_sizes(breakdown, found).splitlines()
    assert len(sizes) == 3  # the bin without regions is left out
    assert sizes[2].split() == [
        "brick", ">1%", "5", "50.00", "→", "48.00", "-2.00", "[-5.00,+1.00]~", "50.00", "→", "48.00", "-2.00",
        "50.00", "→", "48.00", "-2.00", "[-3.00,-1.00]",
    ]  # fmt: skip
    assert format_sizes(breakdown, None, with_delta=False).splitlines()[2].split() == [
        "brick",
        ">1%",
        "5",
        "50.00",
        "50.00",
        "50.00",
    ]
    printed = format_breakdowns({"breakdown": breakdown, "intervals": found}).splitlines()
    assert printed[0].startswith("by defect kind") and printed[4].startswith("by defect size")
    assert (
        printed[-1].startswith("[lo,hi]: 95% paired bootstrap interval")
        and "1000 resamples, seed 0" in printed[-1]
    )
    assert format_breakdowns({"breakdown": None, "intervals": None}) == ""


def test_results_format_3_validates_and_format_2_still_reads(tmp_path: Path) -> None:
    stage = dict.fromkeys(("pixel_ap", "aupro"), 0.5)
    both = {"base": stage, "refined": stage}
    old = {"dataset": "demo", "model": "m", "refiner": "r", "categories": ["a"], "format": 2}
    old["metrics"] = {"a": both, "mean": both}
    validate_results(old)
    new = {
        **old,
        "format": RESULTS_FORMAT,
        "breakdown": {"a": {"kinds": {"hole": {"images": 2, **entry(0.1, 0.1)}}, "sizes": {}}},
        "intervals": {"a": {"delta": {"pixel_ap": zero_record(0.01, 0.02)}, "kinds": {}, "sizes": {}}},
    }
    validate_results(new)
    with pytest.raises(ValueError, match="low > high"):
        validate_results({**new, "intervals": {"a": {"delta": {"pixel_ap": zero_record(0.03, 0.02)}}}})
    with pytest.raises(ValueError, match="is not a number"):
        validate_results(
            {**new, "breakdown": {"a": {"kinds": {"hole": {"base": {"pixel_ap": "x"}, "refined": {}}}}}}
        )
    payload = {"replicate_deltas": {"pixel_ap": [0.001, None, -2e-07]}, "names": ["x", "y"]}
    write_json_atomic(tmp_path / "c.json", payload, flat_number_lists=True)
    text = (tmp_path / "c.json").read_text()
    assert '"pixel_ap": [0.001, null, -2e-07]' in text and json.loads(text) == payload


# --- end to end -------------------------------------------------------------------------------------

F2PAD = ["refiner=f2pad", "refiner.steps=3"]


def e2e_args(demo_root: Path, *extra: str) -> list[str]:
    return [
        f"dataset.root={demo_root}", "dataset.categories=[brick,gravel]", *TINY_RUN, *F2PAD,
        "eval.resolution=original", "eval.bootstrap.replicates=300", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def f2pad_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("breakdown") / "run"
    run = run_train(e2e_args(demo_root, "eval.save_maps=true"), run_dir, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def saved_maps(run_dir: Path, demo_root: Path, category: str, stage: str) -> tuple[list, list, list[str]]:
    """The saved maps of every test image at its own size, the original masks, the kinds, in record order."""
    records = open_dataset("demo", demo_root).records(category, "test")
    images = data.AnomalyImageDataset(records, image_size=1)
    maps, masks = [], []
    for index, record in enumerate(records):
        path = run_dir / "maps" / category / stage / record.defect_type / f"{record.image_path.stem}.tiff"
        maps.append(torch.from_numpy(read_map(path))[None])
        masks.append(images.original_mask(index)[None])
    return maps, masks, defect_kinds(records)


@pytest.mark.slow
def test_results_json_has_kinds_sizes_and_intervals(f2pad_run, demo_root: Path) -> None:
    results = f2pad_run.results
    assert results["format"] == RESULTS_FORMAT == 3
    validate_results(results)
    for category in ("brick", "gravel"):
        breakdown = results["breakdown"][category]
        assert set(breakdown["kinds"]) == {"crack", "hole", "scratch", "stain"}
        for kind in breakdown["kinds"].values():
            assert (kind["images"], kind["defective"]) == (28, 8)
        assert sum(b["regions"] for b in breakdown["sizes"].values()) > 0
        found = results["intervals"][category]
        assert (found["level"], found["replicates"], found["seed"]) == (0.95, 300, 0)
        assert set(found["delta"]) == {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"}
        assert set(found["kinds"]) == set(breakdown["kinds"])
        metrics = results["metrics"][category]
        for key, record in found["delta"].items():
            delta = metrics["refined"][key] - metrics["base"][key]
            assert record["low"] <= record["high"]
            assert record["low"] - 1e-9 <= delta <= record["high"] + 1e-9 or record["contains_zero"], (
                category,
                key,
            )
        for view in (*found["kinds"].values(), *found["sizes"].values()):
            for record in view.values():
                assert record["low"] <= record["high"] and record["contains_zero"] == (
                    record["low"] <= 0 <= record["high"]
                )
    assert results["intervals"]["mean"]["categories"] == ["brick", "gravel"]
    mean_delta = (
        results["metrics"]["mean"]["refined"]["pixel_ap"] - results["metrics"]["mean"]["base"]["pixel_ap"]
    )
    mean_record = results["intervals"]["mean"]["delta"]["pixel_ap"]
    assert mean_record["low"] <= mean_delta <= mean_record["high"]  # F2PAD's demo gain is far from 0
    assert set(results["breakdown"]["mean"]["kinds"]) == {"crack", "hole", "scratch", "stain"}
    timings = results["timings"]["per_category"]["brick"]
    assert 0 < timings["breakdown_s"] + timings["bootstrap_s"] < timings["test_s"]
    category_file = json.loads((f2pad_run.run_dir / "categories" / "brick.json").read_text())
    assert len(category_file["replicate_deltas"]["pixel_ap"]) == 300
    assert "replicate_deltas" not in json.dumps(results)


@pytest.mark.slow
def test_breakdowns_equal_the_metrics_of_the_saved_maps(f2pad_run, demo_root: Path) -> None:
    """eval.resolution=original scores the maps eval.save_maps writes: each kind's and size bin's
    pixel metrics recomputed from those files."""
    for category in ("brick", "gravel"):
        breakdown = f2pad_run.results["breakdown"][category]
        for stage in ("base", "refined"):
            maps, masks, kinds = saved_maps(f2pad_run.run_dir, demo_root, category, stage)
            for kind, entry in breakdown["kinds"].items():
                chosen = [i for i, k in enumerate(kinds) if k in ("good", kind)]
                expected = compute_metrics(
                    torch.cat([maps[i] for i in chosen]), torch.cat([masks[i] for i in chosen])
                )
                for key in PIXEL_KEYS:
                    assert entry[stage][key] == pytest.approx(expected[key], abs=1e-6), (category, kind, key)
            by_size = size_metrics(maps, masks)
            for key, entry in breakdown["sizes"].items():
                assert entry["regions"] == by_size[key]["regions"]
                for metric in ("pixel_auroc", "pixel_ap", "aupro"):
                    if entry[stage][metric] is not None:
                        assert entry[stage][metric] == pytest.approx(by_size[key][metric], abs=1e-6)


@pytest.mark.slow
def test_console_and_report_show_the_breakdowns(f2pad_run) -> None:
    out = f2pad_run.stdout
    assert out.count("95% CI") == 3  # brick, gravel, mean
    assert "by defect kind" in out and "by defect size" in out and "paired bootstrap interval" in out
    page = (f2pad_run.run_dir / "report.html").read_text()
    assert "<h2>By defect kind</h2>" in page and "<h2>By defect size</h2>" in page
    assert "300 resamples" in page and "not</em> a rerun of training" in page


@pytest.mark.slow
def test_a_resumed_run_gives_the_same_interval_of_the_mean(
    f2pad_run, demo_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "resume"
    shutil.copytree(f2pad_run.run_dir / "categories", run_dir / "categories")
    (run_dir / "categories" / "gravel.json").unlink()  # as if interrupted during gravel
    rerun = run_train(e2e_args(demo_root, "eval.save_maps=true"), run_dir, timeout=1500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "category brick already finished" in rerun.stdout + rerun.stderr
    assert rerun.results["intervals"] == f2pad_run.results["intervals"]
    assert rerun.results["breakdown"] == f2pad_run.results["breakdown"]
