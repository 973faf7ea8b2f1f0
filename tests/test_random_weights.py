"""``model.weights=random``: each detector family builds its real architecture with random weights drawn
from the run's seed, looks up no weight file (nor downloads one) and marks its results smoke-only.

The CLIP detectors are built on ViT-B-16 (a real named open_clip model, small enough for a test); the
published ViT-B-16-plus-240 and ViT-L-14-336 are only checked to be what ``create_model`` is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import pytest
import timm
import torch
from anomalib.models.components.feature_extractors import TimmFeatureExtractor
from conftest import TINY_RUN, run_train
from fakes import PUBLISHED_CLIPS
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException

from anorefine import plan
from anorefine.assembly import build_component
from anorefine.config import CONF_DIR, register_configs
from anorefine.detectors import backbones, clip_models
from anorefine.detectors.patchcore import PatchCoreDetector
from anorefine.detectors.winclip import WinClipDetector
from anorefine.errors import WeightsError
from anorefine.weights import RANDOM, WEIGHTS_ENV

register_configs()
#: A real named open_clip architecture small enough to build in a test (patch 16, native 224²).
SMALL_CLIP = "ViT-B-16"
#: Overrides that build each CLIP detector on ``SMALL_CLIP`` at its native size (ViT-B has 12 layers).
CLIP_DETECTORS = {
    "winclip": ["model=winclip", f"model.clip={SMALL_CLIP}", "model.image_size=224"],
    "anomalyclip": [
        "model=anomalyclip", f"model.clip={SMALL_CLIP}", "model.image_size=224", "model.feature_layers=[12]",
    ],
    "musc": ["model=musc", "model.family=open_clip", f"model.backbone={SMALL_CLIP}", "model.image_size=224"],
}  # fmt: skip


def composed(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A weights dir that does not exist; looking up any weight file (or downloading one) fails the test."""

    def looked_up(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a weight file was looked up: {args}")

    monkeypatch.setattr(backbones, "find_weight_file", looked_up)
    monkeypatch.setattr(backbones, "efficientnet_lite0_state_dict", looked_up)
    monkeypatch.setattr(clip_models, "find_weight_file", looked_up)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", looked_up)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return tmp_path / "no_weights"


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every ``timm.create_model`` / ``open_clip.create_model`` call: (library, model name, keywords)."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for module in (timm, open_clip):
        original = module.create_model

        def spy(
            name: str, *args: Any, _original: Any = original, _library: str = module.__name__, **kwargs: Any
        ):
            calls.append((_library, name, kwargs))
            return _original(name, *args, **kwargs)

        monkeypatch.setattr(module, "create_model", spy)
    return calls


def same_shapes(built: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> bool:
    return all(key in reference and value.shape == reference[key].shape for key, value in built.items())


@pytest.mark.parametrize("model", ["patchcore", "padim", "cflow"])
def test_cnn_detectors_build_the_named_backbone_with_random_weights(
    model: str, no_weights: Path, created: list[tuple[str, str, dict[str, Any]]]
) -> None:
    cfg = composed(
        f"model={model}", "model.backbone=resnet18", "model.weights=random", f"paths.weights_dir={no_weights}"
    )
    detector = build_component(cfg.model)
    assert detector.smoke_only
    assert {name for _, name, _ in created} == {"resnet18"}
    assert all(kwargs.get("pretrained") is False for _, _, kwargs in created)
    extractor = next(m for m in detector.modules() if isinstance(m, TimmFeatureExtractor))
    built = extractor.feature_extractor.state_dict()
    assert same_shapes(built, timm.create_model("resnet18", pretrained=False).state_dict())
    assert any(key.startswith("layer3.") for key in built)  # the deepest stage read at stride 16
    assert not no_weights.exists()


def test_random_backbone_weights_depend_on_the_seed_alone(no_weights: Path) -> None:
    def backbone(seed: int, torch_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(torch_seed)  # the global random state must not matter
        detector = PatchCoreDetector(
            backbone="resnet18", weights=RANDOM, weights_seed=seed, weights_dir=str(no_weights)
        )
        return detector.model.feature_extractor.feature_extractor.state_dict()

    first, again, other = backbone(3, 0), backbone(3, 1), backbone(4, 0)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


@pytest.fixture(scope="module")
def small_clip_state() -> dict[str, torch.Tensor]:
    """The state dict of open_clip's own ``SMALL_CLIP``, random (built once for the module)."""
    return open_clip.create_model(SMALL_CLIP, pretrained=None).state_dict()


@pytest.mark.parametrize("family", sorted(CLIP_DETECTORS))
def test_clip_detectors_build_the_named_architecture_with_random_weights(
    family: str,
    no_weights: Path,
    created: list[tuple[str, str, dict[str, Any]]],
    small_clip_state: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # WinCLIP's prompt ensemble (hundreds of prompts through the text tower) is not what is tested here
    monkeypatch.setattr(WinClipDetector, "set_category", lambda self, name: None)
    cfg = composed(*CLIP_DETECTORS[family], "model.weights=random", f"paths.weights_dir={no_weights}")
    detector = build_component(cfg.model)
    assert detector.smoke_only
    assert [(name, kwargs.get("pretrained")) for _, name, kwargs in created] == [(SMALL_CLIP, None)]
    clip = detector.model.clip if family == "winclip" else detector.clip
    built = clip.state_dict()
    assert set(built) == set(small_clip_state) and same_shapes(built, small_clip_state)
    assert not no_weights.exists()


@pytest.mark.parametrize(
    ("overrides", "architecture"),
    [(overrides, architecture) for overrides, architecture, _ in PUBLISHED_CLIPS],
)
def test_the_published_clip_is_asked_for_without_a_checkpoint(
    overrides: list[str], architecture: str, no_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``create_model`` is asked for, stopped there: no ViT-L is built in the tests."""
    asked: list[tuple[str, dict[str, Any]]] = []

    def stop(name: str, **kwargs: Any) -> None:
        asked.append((name, kwargs))
        raise InterruptedError

    monkeypatch.setattr(open_clip, "create_model", stop)
    cfg = composed(*overrides, "model.weights=random", f"paths.weights_dir={no_weights}")
    with pytest.raises(InstantiationException, match="InterruptedError"):
        build_component(cfg.model)
    assert [(name, kwargs["pretrained"]) for name, kwargs in asked] == [(architecture, None)]


def test_random_clip_weights_depend_on_the_seed_alone(no_weights: Path) -> None:
    def clip(seed: int, torch_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(torch_seed)
        return clip_models.load_clip(
            "ViT-S-32", "openai", no_weights, 224, seed=seed, weights=RANDOM
        ).state_dict()

    first, again, other = clip(3, 0), clip(3, 1), clip(4, 0)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["visual.conv1.weight"], other["visual.conv1.weight"])


def test_the_weights_seed_is_the_run_seed() -> None:
    assert composed("seed=7").model.weights_seed == 7
    assert composed("model=winclip", "seed=7").model.weights_seed == 7


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.backbone=wide_resnet50_2"],
        ["model=padim", "model.backbone=wide_resnet50_2"],
        ["model=winclip"],
        ["model=anomalyclip"],
        ["model=musc", "model.family=open_clip", "model.backbone=ViT-L-14-336"],
    ],
)
def test_a_missing_weight_file_is_an_error_for_pretrained_weights_only(
    overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    missing = f"paths.weights_dir={tmp_path / 'no_weights'}"
    plan.check_weights(composed(*overrides, missing, "model.weights=random").model)
    with pytest.raises(WeightsError, match="weights not found"):
        plan.check_weights(composed(*overrides, missing).model)


@pytest.mark.slow
def test_a_random_weight_run_reads_no_weights_and_is_marked_smoke_only(
    demo_root: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "no_weights"
    args = ["model.backbone=resnet18", "model.weights=random", f"paths.weights_dir={weights}"]
    run = run_train(
        [*args, f"dataset.root={demo_root}", "dataset.categories=[brick]", *TINY_RUN], tmp_path / "run"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.results["smoke_only"] is True and "smoke-only" in run.stdout
    assert run.results["config"]["model"]["weights"] == "random"
    assert not weights.exists()
    assert "brick: scoring: " in run.stdout + run.stderr  # the test pass's progress line (anorefine.progress)
