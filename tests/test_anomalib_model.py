"""model=anomalib: anomalib's own models behind the detector contract, trained by their own training
step, scored raw, with offline or seeded random weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from conftest import REPO, TINY_RUN, compose_with, run_train
from fakes import Normals
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from anorefine import fits, plan
from anorefine.assembly import build_component
from anorefine.detectors import offline_hubs
from anorefine.detectors.anomalib_model import AnomalibDetector, as_feature_map, build_module
from anorefine.detectors.backbones import detector_feature_extractor, efficientnet_lite0_state_dict
from anorefine.detectors.cnn import stage_layers
from anorefine.detectors.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from anorefine.errors import AnorefineError, WeightsError
from anorefine.refiners.base import base_map
from anorefine.weights import RANDOM

RESNET18 = "+model.settings.backbone=resnet18"
#: architecture -> (image size, overrides): each small enough to build, train and score in seconds.
FAST: dict[str, tuple[int, list[str]]] = {
    "Padim": (64, [RESNET18]),
    "Patchcore": (64, [RESNET18]),
    "Stfpm": (64, []),
    "ReverseDistillation": (64, [RESNET18]),
    "Fastflow": (64, []),
    "Cflow": (
        64,
        [RESNET18, "+model.settings.layers=[layer2,layer3]", "+model.settings.fiber_batch_size=16"],
    ),
    "Dfm": (64, [RESNET18]),
    "Uflow": (64, [RESNET18]),
    "Cfa": (64, [RESNET18]),
    "Fre": (64, [RESNET18, "+model.settings.layer=layer3", "+model.settings.input_dim=1024"]),  # 256 x 2 x 2
    "MHPatchcore": (64, [RESNET18]),
    # GLASS's pre_trained=False (what weights=random sets) fails inside anomalib (it hands AdamW the
    # backbone's name); with pre_trained kept, the seeded hub serves the random weights
    "Glass": (64, [RESNET18, "+model.settings.pre_trained=true"]),
    "Supersimplenet": (128, [RESNET18]),  # its Perlin noise needs 128 pixels or more
    "AnomalyDINO": (56, []),
    "Dinomaly": (56, ["+model.settings.encoder_name=vit_small_patch14_dinov2"]),
}
#: DRAEM's two U-Nets take about 20 s to train one epoch on 4 images; its texture folder may be empty.
SLOW: dict[str, tuple[int, list[str]]] = {"Draem": (64, ["+model.settings.dtd_dir={empty}"])}


def anomalib_detector(architecture: str, *overrides: str, seed: int = 0) -> tuple[AnomalibDetector, int]:
    """The detector of ``model=anomalib`` with random weights, built after seeding as the run does."""
    cfg = compose_with(
        ["model=anomalib", f"model.architecture={architecture}", "model.weights=random", "model.epochs=1",
         *overrides]
    )  # fmt: skip
    L.seed_everything(seed, verbose=False)
    return build_component(cfg.model).eval(), int(cfg.model.image_size)


def trained(architecture: str, *overrides: str, seed: int = 0) -> tuple[AnomalibDetector, int]:
    detector, size = anomalib_detector(architecture, *overrides, seed=seed)
    detector.fit(DataLoader(Normals(size), batch_size=2))
    return detector, size


def own_map(detector: AnomalibDetector, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The anomalib module's own forward (its pre-processor, model, no post-processor): (B,1,H,W), (B,)."""
    with torch.no_grad():
        prediction = detector.module(images)
    anomaly_map = prediction.anomaly_map.float()
    return anomaly_map.reshape(len(images), 1, *anomaly_map.shape[-2:]), prediction.pred_score.flatten()


def check_model(architecture: str, size: int, overrides: list[str]) -> None:
    """The contract on the anomalib model; its base map is its own map averaged over 8-pixel cells."""
    detector, _ = trained(architecture, f"model.image_size={size}", *overrides)
    images = Normals(size, count=3).images
    output = detector(images)
    grid = size // 8
    assert output.anomaly_map.shape == (3, 1, grid, grid) and output.anomaly_map.dtype == torch.float32
    assert output.image_score.shape == (3,) and output.image_score.dtype == torch.float32
    assert output.features.shape[0] == 3 and output.features.shape[-2:] == (grid, grid)
    assert torch.isfinite(output.anomaly_map).all() and torch.isfinite(output.features).all()
    assert (output.stride, output.receptive_field, output.baseline.sigma) == (8, 16, 0.0)
    expected_map, expected_score = own_map(detector, images)
    assert expected_map.shape[-2:] == (size, size)
    torch.testing.assert_close(output.anomaly_map, F.avg_pool2d(expected_map, 8), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.image_score, expected_score)
    again, _ = trained(architecture, f"model.image_size={size}", *overrides)
    assert torch.equal(again(images).anomaly_map, output.anomaly_map)  # same seed, same model


@pytest.mark.parametrize("architecture", sorted(FAST))
def test_anomalib_models_keep_the_contract_and_score_their_own_map(architecture: str) -> None:
    size, overrides = FAST[architecture]
    check_model(architecture, size, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(SLOW))
def test_slow_anomalib_models_keep_the_contract(architecture: str, tmp_path: Path) -> None:
    size, overrides = SLOW[architecture]
    check_model(architecture, size, [o.format(empty=tmp_path) for o in overrides])


def test_stride_one_keeps_the_models_own_map_as_the_base_map() -> None:
    detector, size = trained("Padim", "model.image_size=64", RESNET18, "model.stride=1")
    images = Normals(size, count=2).images
    output = detector(images)
    expected, _ = own_map(detector, images)
    assert output.anomaly_map.shape == (2, 1, 64, 64)
    torch.testing.assert_close(base_map(output, (64, 64)), expected, rtol=0, atol=1e-6)


def test_the_scoring_refuses_before_training() -> None:
    detector, size = anomalib_detector("Padim", "model.image_size=64", RESNET18)
    with pytest.raises(RuntimeError, match="not trained yet"):
        detector(Normals(size, count=1).images)


def test_features_are_the_models_backbone_output_on_the_grid() -> None:
    detector, size = trained("Padim", "model.image_size=64", RESNET18)
    images = Normals(size, count=2).images
    extractor = detector.module.model.feature_extractor
    with torch.no_grad():
        layer1 = extractor(normalize(images, IMAGENET_MEAN, IMAGENET_STD))["layer1"]  # stride 4: 16x16
    expected = layer1.reshape(2, 64, 8, 2, 8, 2).mean((3, 5))
    torch.testing.assert_close(detector(images).features, expected)
    assert detector.feature_origin == "model backbone (feature_extractor: TimmFeatureExtractor)"


def test_feature_source_fallback_reads_the_fallback_backbone() -> None:
    detector, size = trained("Padim", "model.image_size=64", RESNET18, "model.feature_source=fallback")
    images = Normals(size, count=2).images
    extractor = detector_feature_extractor(
        "efficientnet_lite0", stage_layers("efficientnet_lite0", (8,)), "unused", RANDOM, 0
    )
    with torch.no_grad():
        expected = next(iter(extractor(normalize(images, IMAGENET_MEAN, IMAGENET_STD)).values()))
    assert expected.shape[-2:] == (8, 8)
    torch.testing.assert_close(detector(images).features, expected)
    assert detector.feature_origin == "fallback backbone (efficientnet_lite0, stride 8)"


def test_vit_tokens_are_laid_onto_their_patch_grid() -> None:
    tokens = torch.arange(2 * 21 * 3, dtype=torch.float32).reshape(2, 21, 3)  # 5 prefix tokens + 4x4
    feature_map = as_feature_map([(tokens, tokens[:, 0])])
    assert feature_map is not None and feature_map.shape == (2, 3, 4, 4)
    for row in range(4):
        for col in range(4):
            assert torch.equal(feature_map[:, :, row, col], tokens[:, 5 + 4 * row + col])
    finer = torch.zeros(1, 2, 8, 8)
    assert as_feature_map({"a": torch.zeros(1, 4, 4, 4), "b": finer}) is finer


def backbone_state(detector: AnomalibDetector) -> dict[str, torch.Tensor]:
    return detector.module.model.teacher_model.feature_extractor.state_dict()


def test_random_weights_depend_on_the_weights_seed_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no_weights"

    def looked_up(*args: Any) -> None:
        raise AssertionError(f"a weight file was looked up: {args}")

    monkeypatch.setattr(offline_hubs, "backbone_weight_file", looked_up)
    monkeypatch.setattr(offline_hubs, "torchvision_weight_file", looked_up)

    def teacher(weights_seed: int, seed: int) -> dict[str, torch.Tensor]:
        args = ["model.image_size=64", f"paths.weights_dir={missing}", f"model.weights_seed={weights_seed}"]
        return backbone_state(anomalib_detector("Stfpm", *args, seed=seed)[0])

    first, again, other = teacher(3, 0), teacher(3, 1), teacher(4, 0)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    assert not missing.exists()


def pretrained_detector(architecture: str, weights_dir: Path, *overrides: str) -> AnomalibDetector:
    cfg = compose_with(
        ["model=anomalib", f"model.architecture={architecture}", "model.image_size=64",
         f"paths.weights_dir={weights_dir}", *overrides]
    )  # fmt: skip
    plan.check_weights(cfg.model)
    return build_component(cfg.model)


def random_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {
        key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }


def test_pretrained_timm_backbones_are_read_from_the_weights_dir(tmp_path: Path) -> None:
    """STFPM's teacher (built with pretrained=True, no setting to turn it off) reads the weights dir's
    file; its student is trained from scratch."""
    state = random_state(timm.create_model("resnet18", pretrained=False))
    (tmp_path / "timm").mkdir()
    save_file(state, str(tmp_path / "timm" / "resnet18.tv_in1k.safetensors"))
    detector = pretrained_detector("Stfpm", tmp_path)
    teacher = backbone_state(detector)
    assert all(torch.equal(value, state[key]) for key, value in teacher.items())
    student = detector.module.model.student_model.feature_extractor.state_dict()
    assert not torch.equal(student["conv1.weight"], state["conv1.weight"])
    assert not detector.smoke_only


def test_packaged_backbone_weights_need_no_file(tmp_path: Path) -> None:
    layers = "+model.settings.layers=[blocks.1,blocks.2]"
    lite0 = ["+model.settings.backbone=efficientnet_lite0", layers, "+model.settings.n_features=40"]
    detector = pretrained_detector("Padim", tmp_path, *lite0)
    built = detector.module.model.feature_extractor.feature_extractor.state_dict()
    packaged = efficientnet_lite0_state_dict()
    assert built and all(torch.equal(value, packaged[key]) for key, value in built.items())
    assert not any(tmp_path.iterdir())


def test_pretrained_torchvision_backbones_are_read_from_the_weights_dir(tmp_path: Path) -> None:
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    path = tmp_path / "torchvision" / url.rsplit("/", 1)[-1]
    with pytest.raises(WeightsError, match=f"torchvision weights not found at {path}.*{url}"):
        pretrained_detector("Cfa", tmp_path, RESNET18)
    state = random_state(torchvision.models.resnet18())
    path.parent.mkdir()
    torch.save(state, path)
    detector = pretrained_detector("Cfa", tmp_path, RESNET18)
    built = detector.module.model.feature_extractor.state_dict()
    assert built and all(torch.equal(value, state[key]) for key, value in built.items())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.architecture=Nope"],
            r"model\.architecture=Nope is not an anomalib image model: use one of .*Stfpm",
        ),
        (["model.architecture=Ganomaly"], r"scores whole images only \(no anomaly map to refine\)"),
        (
            ["+model.settings.backbon=resnet18"],
            r"model\.settings\.backbon is not a setting of anomalib's Padim",
        ),
        (["+model.settings.pre_processor=true"], r"model\.settings\.pre_processor is not a setting"),
        (["model.name=Stfpm"], r"model\.name=Stfpm only labels the run.*set model\.architecture=Stfpm"),
        (["model.stride=0"], r"model\.stride=0: use 1"),
    ],
)
def test_bad_anomalib_settings_fail_in_one_line_before_any_model(overrides: list[str], message: str) -> None:
    with pytest.raises(AnorefineError, match=message) as raised:
        plan.check_config(compose_with(["model=anomalib", *overrides]))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("architecture", ["Patchcore", "Stfpm"])
def test_a_cached_fit_gives_the_same_maps(architecture: str, tmp_path: Path) -> None:
    """What the fit changed (a memory bank, trained weights) is in the state dict: the fit cache
    restores it into a fresh detector."""
    detector, size = anomalib_detector(architecture, "model.image_size=64", RESNET18)
    before = fits.snapshot(detector)
    detector.fit(DataLoader(Normals(size), batch_size=2))
    fits.save_fit(tmp_path / "fit.pt", fits.fitted_state(detector, before))
    fresh, _ = anomalib_detector(architecture, "model.image_size=64", RESNET18, seed=1)
    fits.load_fit(fresh, tmp_path / "fit.pt")
    images = Normals(size, count=2).images
    assert torch.equal(fresh(images).anomaly_map, detector(images).anomaly_map)


@pytest.mark.slow
def test_ard_refines_an_anomalib_model_end_to_end(demo_root: Path, tmp_path: Path) -> None:
    args: list[Any] = [
        f"dataset.root={demo_root}", "dataset.categories=[brick]", "model=anomalib",
        "model.architecture=Stfpm", "model.weights=random", "model.epochs=2", "refiner=ard",
        "curriculum=pgt", "curriculum.group_size=26", "curriculum.steps_per_group=2",
        "curriculum.synthetic_per_group=2", *[a for a in TINY_RUN if not a.startswith("model.coreset")],
    ]  # fmt: skip
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    results = run.results
    assert (results["model"], results["method"], results["refines"]) == ("anomalib", "ard+pgt", True)
    assert results["smoke_only"] is True and results["config"]["model"]["architecture"] == "Stfpm"
    base, refined = results["metrics"]["brick"]["base"], results["metrics"]["brick"]["refined"]
    assert all(0.0 <= value <= 1.0 for value in (*base.values(), *refined.values()) if value is not None)
    assert refined["pixel_ap"] != base["pixel_ap"]  # the trained ARD changed the map
    printed = run.stdout + run.stderr
    assert "GPU available" not in printed and "Warning" not in printed


@pytest.mark.slow
def test_the_table_script_writes_a_row_per_method(demo_root: Path, tmp_path: Path) -> None:
    doc, out = tmp_path / "table.md", tmp_path / "out"
    doc.write_text("# Models\n\n<!-- anomalib-table:begin -->\nold\n<!-- anomalib-table:end -->\ntail\n")
    command = [sys.executable, str(REPO / "scripts" / "anomalib_table.py"), "--quick", "--models", "Padim",
               "--out", str(out), "--doc", str(doc), "--", f"dataset.root={demo_root}"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith("# Models\n") and text.endswith("<!-- anomalib-table:end -->\ntail\n")
    assert "old" not in text and "Smoke-only" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| Padim |")]
    assert [row[1] for row in rows[:3]] == ["none", "ard+pgt", "f2pad"]
    assert rows[3][1] == "model backbone (feature_extractor: TimmFeatureExtractor) |"
    base = json.loads((out / "Padim" / "none" / "results.json").read_text())["metrics"]["mean"]["base"]
    assert rows[0][2] == f"{100 * base['pixel_ap']:.2f}"
    refined_run = json.loads((out / "Padim" / "ard_pgt" / "results.json").read_text())
    interval = refined_run["intervals"]["mean"]["delta"]["pixel_ap"]  # the Δ's interval, in brackets
    assert rows[1][2].endswith(f" [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}])")


def test_a_setting_anomalib_refuses_is_one_line_naming_the_architecture() -> None:
    with pytest.raises(
        AnorefineError,
        match=r"^model.architecture=Fastflow refused model.settings=.*efficientnet_lite0.*not supported",
    ):
        build_module("Fastflow", {"backbone": "efficientnet_lite0"}, 64, RANDOM, Path("."))
