"""The run's plan is checked before any model is built: silent no-ops, size disagreement, a missing
GPU, a sweep preset without -m, and bad files fail with one line naming the setting or file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_with, run_train
from fakes import PUBLISHED_CLIPS
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from PIL import Image

from anorefine import plan
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.data.dataset import AnomalyImageDataset
from anorefine.data.records import ImageRecord
from anorefine.errors import AnorefineError, DataError

register_configs()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["refiner=ard"], r"refiner=ard is trained .* add curriculum=pgt"),
        (["curriculum=pgt"], r"curriculum=pgt trains the refiner, but refiner=none"),
        (["dataset.image_size=128"], r"dataset\.image_size=128 differs from model\.image_size=256"),
    ],
)
def test_a_config_that_would_do_nothing_or_disagree_fails(overrides: list[str], message: str) -> None:
    with pytest.raises(AnorefineError, match=message):
        plan.check_config(composed(*overrides))


def test_consistent_configs_pass() -> None:
    for overrides in ([], ["refiner=ard", "curriculum=pgt"], ["refiner=f2pad"], ["model.image_size=128"]):
        plan.check_config(composed(*overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.threshold.quantile=1.5", r"eval\.threshold\.quantile=1\.5 must lie in \[0, 1\]"),
        ("eval.threshold.k=-1", r"eval\.threshold\.k=-1\.0 must be a number, 0 or more"),
        ("eval.threshold.mebin.sample_rate=0", r"eval\.threshold\.mebin\.sample_rate=0 must be 1 or more"),
    ],
)
def test_a_bad_threshold_setting_fails_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(AnorefineError, match=message):
        plan.check_config(composed(override))


def test_threshold_settings_are_typed_choices_and_default_to_none() -> None:
    cfg = composed()
    assert cfg.eval.threshold.rule == "none" and cfg.eval.threshold.source == "validation"
    for rule in ("quantile", "mean_std", "mebin"):
        plan.check_config(composed(f"eval.threshold.rule={rule}", "eval.threshold.source=train"))
    with pytest.raises(ConfigCompositionException, match=r"eval\.threshold\.rule"):
        composed("eval.threshold.rule=otsu")


def test_a_gpu_asked_for_on_a_cpu_machine_fails_naming_the_fix() -> None:
    with pytest.raises(AnorefineError, match=r"trainer\.accelerator=gpu .* use trainer=cpu"):
        plan.check_config(composed("trainer=gpu"))


def test_only_detectors_fitted_on_train_read_it() -> None:
    assert plan.splits_read(composed().model) == ("test", "train")
    assert plan.splits_read(composed("model=musc").model) == ("test",)
    assert plan.splits_read(composed("model=winclip", "model.clip=tiny").model) == ("test",)
    few_shot = composed("model=winclip", "model.clip=tiny", "model.k_shot=2")
    assert plan.splits_read(few_shot.model) == ("test", "train")


def test_every_seeded_component_follows_the_run_seed() -> None:
    cfg = composed("seed=3", "refiner=ard", "curriculum=pgt", "refiner/guidance=novelty")
    assert cfg.refiner.seed == cfg.curriculum.order_seed == cfg.refiner.guidance.seed == 3


def test_a_mask_of_another_size_fails_before_decoding(tmp_path: Path) -> None:
    image, mask = tmp_path / "000.png", tmp_path / "000_mask.png"
    Image.new("RGB", (32, 32)).save(image)
    Image.new("L", (16, 16)).save(mask)
    dataset = AnomalyImageDataset([ImageRecord(image, mask, 1, "hole", "x")], 32)
    with pytest.raises(DataError, match=r"000_mask\.png is 16x16 .*000\.png is 32x32"):
        dataset.check_files()


@pytest.mark.slow
def test_a_sweep_preset_without_multirun_fails_in_one_line(tmp_path: Path) -> None:
    run = run_train(["experiment=transfer", f"paths.data_dir={tmp_path}/data"], tmp_path / "run")
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "run it with python train.py -m experiment=transfer" in run.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_bad_file_in_a_later_category_fails_before_the_first_fit(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for category in ("brick", "gravel"):
        shutil.copytree(demo_root / category, root / category)
    broken = sorted((root / "gravel" / "test" / "good").iterdir())[0]
    broken.write_bytes(b"not an image")
    run = run_train(["dataset=folder", f"dataset.root={root}", "model.image_size=64"], tmp_path / "run")
    assert run.returncode == 2 and broken.name in run.stderr
    assert not (tmp_path / "run" / "categories" / "brick.json").exists()  # brick was never fitted


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        (["model.backbone=wide_resnet50_2"], "ImageNet wide_resnet50_2 weights not found"),
        *[(overrides, f"CLIP {arch} ({tag}) weights not found") for overrides, arch, tag in PUBLISHED_CLIPS],
        (["model=anomalib"], "ImageNet resnet18 weights not found"),  # Padim, anomalib's default backbone
        (["model=anomalib", "+model.settings.backbone=resnet50"], "timm/resnet50.safetensors (no internet"),
    ],
)
def test_a_missing_weight_file_fails_before_any_model_is_built(
    overrides: list[str], missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANOREFINE_WEIGHTS_DIR", raising=False)
    cfg = composed(*overrides, f"paths.weights_dir={tmp_path}")
    with pytest.raises(AnorefineError, match=re.escape(missing)) as raised:
        plan.check_weights(cfg.model)
    assert str(tmp_path) in str(raised.value) and "scripts/download.py weights" in str(raised.value)


def test_weights_that_ship_in_a_package_or_are_random_pass(tmp_path: Path) -> None:
    for overrides in ([], ["model=padim"], ["model=musc"], ["model=winclip", "model.clip=tiny"]):
        plan.check_weights(composed(*overrides, f"paths.weights_dir={tmp_path}").model)


def test_a_protocol_and_a_model_that_cannot_go_together_say_which() -> None:
    cfg = compose_with(["protocol=anomalyclip", "model=winclip", "model.clip=tiny"])
    message = (
        r"^protocol=anomalyclip with model=winclip: model\.image_size=518 is not a multiple of the patch "
        r"size 16 of model\.clip=tiny: set model\.image_size=512 or 528$"
    )
    with pytest.raises(AnorefineError, match=message):
        plan.check_config(cfg)
    plan.check_config(compose_with(["model=winclip", "model.clip=tiny"]))  # 240: a multiple of 16
    with pytest.raises(AnorefineError, match=r"^model\.image_size=250 is not a multiple"):
        plan.check_config(compose_with(["model=winclip", "model.clip=tiny", "model.image_size=250"]))
