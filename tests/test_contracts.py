"""The detector and refiner contracts, checked for every option of conf/model and conf/refiner.

A new ``conf/model/X.yaml`` or ``conf/refiner/X.yaml`` is picked up here with no test to write:
built from its config (with ``SMALL`` overrides where the real one needs weights or minutes), fitted
when it asks for normal images, it must return the contract's shapes and dtypes, report a stride and
receptive field that match its grid, and give the same output for the same seed.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from fakes import FakeDetector, Normals
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from anorefine.assembly import build_component
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.detectors.base import Detector, DetectorOutput
from anorefine.refiners.base import Refiner, baseline_map

#: Overrides that make a model or refiner option small enough to build and fit in seconds, offline.
SMALL: dict[str, list[str]] = {
    "patchcore": ["model.image_size=64"],
    "padim": ["model.image_size=64"],
    "cflow": ["model.image_size=64", "model.epochs=1"],
    "winclip": ["model.clip=tiny", "model.image_size=96"],
    "anomalyclip": ["model.clip=tiny", "model.image_size=70"],
    "musc": ["model.image_size=64", "model.r_list=[1,3]"],
    "anomalib": ["model.image_size=64", "model.weights=random"],
}
#: Detectors whose maps must stay finite fp32 and close to fp32 under bf16 autocast (the GPU path).
BF16_TOLERANCE = {"winclip": 0.05, "anomalyclip": 0.1}
register_configs()


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def build(group: str, option: str, *extra: str, seed: int = 0) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}", *SMALL.get(option, []), *extra])
    L.seed_everything(seed, verbose=False)
    return build_component(cfg[group]), cfg


def fitted(option: str, seed: int = 0) -> tuple[Detector, int]:
    detector, cfg = build("model", option, seed=seed)
    size = cfg.model.image_size
    detector.eval().setup_category("brick")
    if detector.requires_fit:
        detector.fit(DataLoader(Normals(size), batch_size=2))
    return detector, size


@pytest.mark.parametrize("option", options("model"))
def test_every_detector_keeps_the_contract(option: str) -> None:
    detector, size = fitted(option)
    images = Normals(size, count=3).images
    if detector.transductive:  # scored against the other test images: show it six of them
        detector.set_reference(Normals(size, count=6).images)
    output = detector(images)
    assert isinstance(output, DetectorOutput)
    batch, _, height, width = output.anomaly_map.shape
    assert (batch, output.anomaly_map.shape[1]) == (3, 1) and output.anomaly_map.dtype == torch.float32
    assert output.image_score.shape == (3,) and output.image_score.dtype == torch.float32
    assert output.features.shape[0] == 3 and output.features.shape[-2:] == (height, width)
    assert torch.isfinite(output.anomaly_map).all() and torch.isfinite(output.image_score).all()
    assert isinstance(output.stride, int) and isinstance(output.receptive_field, int)
    assert output.receptive_field >= output.stride > 0
    assert (
        abs(height * output.stride - size) < output.stride
        and abs(width * output.stride - size) < output.stride
    )
    again, _ = fitted(option)
    if again.transductive:
        again.set_reference(Normals(size, count=6).images)
    assert torch.equal(again(images).anomaly_map, output.anomaly_map)  # same seed, same detector


@pytest.mark.parametrize("option", sorted(BF16_TOLERANCE))
def test_clip_detectors_run_under_bf16_autocast(option: str) -> None:
    detector, size = fitted(option)
    images = Normals(size, count=1).images
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = detector(images)
    assert output.anomaly_map.dtype == torch.float32 and torch.isfinite(output.anomaly_map).all()
    assert (output.anomaly_map - detector(images).anomaly_map).abs().max() < BF16_TOLERANCE[option]


@pytest.mark.parametrize("option", options("refiner"))
def test_every_refiner_keeps_the_contract(option: str) -> None:
    refiner, _ = build("refiner", option)
    assert isinstance(refiner, Refiner)
    detector = FakeDetector()
    refiner.attach(detector)
    images = Normals(64, count=2).images
    output = detector(images)
    refined = refiner(images, output)
    assert refined.shape == (2, 1, 64, 64) and refined.dtype == torch.float32
    assert torch.isfinite(refined).all()
    assert refiner.image_score(refined, output.image_score).shape == (2,)
    if refiner.returns_base_map or refiner.trainable:  # an untrained refiner gives the base map
        assert torch.equal(refined, baseline_map(output.anomaly_map, (64, 64)))
    again, _ = build("refiner", option)
    again.attach(detector)
    assert torch.equal(again(images, detector(images)), refined)
