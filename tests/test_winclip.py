"""WinCLIP: parity with anomalib's WinClipModel on the same tiny CLIP, the output contract, weights lookup."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from unittest import mock

import open_clip
import pytest
import torch
import torch.nn.functional as F
from anomalib.models.image.winclip.torch_model import WinClipModel
from conftest import run_train

from anorefine.detectors.clip_models import CLIP_MEAN, CLIP_STD, checkpoint_name, load_clip, tiny_clip
from anorefine.detectors.normalization import normalize
from anorefine.detectors.winclip import WinClipDetector
from anorefine.errors import WeightsError
from anorefine.weights import WEIGHTS_ENV

SIZE = 96  # 6×6 grid of 16-px patches: 25 windows of 2×2, 16 of 3×3


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def anomalib_reference(detector: WinClipDetector, class_name: str) -> WinClipModel:
    """anomalib's own WinClipModel (its unmodified constructor) on a copy of the detector's CLIP."""
    clip = copy.deepcopy(detector.model.clip)
    with mock.patch.object(open_clip, "create_model_and_transforms", return_value=(clip, None, None)):
        return WinClipModel(class_name=class_name)


def assert_same_as_anomalib(detector: WinClipDetector, reference: WinClipModel, batch: torch.Tensor) -> None:
    """anomalib returns the map upsampled bilinearly to the image; ours, upsampled the same way, must match.

    Bilinear upsampling of a 6×6 grid to 96² is injective, so equal upsampled maps mean equal grids.
    """
    ours = detector(batch)
    theirs = reference(normalize(batch, CLIP_MEAN, CLIP_STD))
    assert ours.anomaly_map.shape == (len(batch), 1, 6, 6)
    upsampled = F.interpolate(ours.anomaly_map, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert (upsampled[:, 0] - theirs.anomaly_map).abs().max() <= 1e-5
    assert (ours.image_score - theirs.pred_score).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def zero_shot() -> WinClipDetector:
    return WinClipDetector(clip="tiny", image_size=SIZE, class_name="metal_nut")


def test_zero_shot_maps_equal_anomalib(zero_shot: WinClipDetector) -> None:
    assert_same_as_anomalib(zero_shot, anomalib_reference(zero_shot, "metal nut"), images(3, seed=1))


def test_few_shot_maps_equal_anomalib() -> None:
    detector = WinClipDetector(clip="tiny", image_size=SIZE, k_shot=1, class_name="screw")
    assert detector.requires_fit
    normal = images(2, seed=2)
    detector.fit([{"image": normal[:1]}, {"image": normal[1:]}])  # keeps the first k_shot images
    reference = anomalib_reference(detector, "screw")
    reference.setup(reference_images=normalize(normal[:1], CLIP_MEAN, CLIP_STD))
    assert reference.k_shot == detector.model.k_shot == 1
    assert_same_as_anomalib(detector, reference, images(2, seed=3))


def test_set_category_rebuilds_the_prompts(zero_shot: WinClipDetector) -> None:
    before = zero_shot.model.text_embeddings.clone()
    zero_shot.set_category("pcb1")
    assert zero_shot.model.class_name == "pcb1"
    assert not torch.equal(before, zero_shot.model.text_embeddings)
    zero_shot.set_category("metal_nut")
    assert zero_shot.model.class_name == "metal nut"
    assert torch.equal(before, zero_shot.model.text_embeddings)


def test_output_contract(zero_shot: WinClipDetector) -> None:
    output = zero_shot(images(2, seed=4))
    assert output.anomaly_map.shape == (2, 1, 6, 6) and output.anomaly_map.dtype == torch.float32
    assert output.features.shape == (2, 64, 6, 6)  # unprojected patch tokens of the tiny CLIP
    assert output.image_score.shape == (2,)
    assert (output.stride, output.receptive_field) == (16, 80)
    assert isinstance(output.stride, int) and isinstance(output.receptive_field, int)
    flat = output.anomaly_map.flatten(1)  # raw scores, not min-max normalised per image
    assert (flat.amin(dim=1) > 0).all() and (flat.amax(dim=1) < 1).all()
    assert not zero_shot.requires_fit and zero_shot.smoke_only


def test_wrong_image_size_is_refused(zero_shot: WinClipDetector) -> None:
    with pytest.raises(ValueError, match="96"):
        zero_shot(torch.rand(1, 3, 64, 64))


def test_missing_weights_name_the_file_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "from_env"))  # used when no setting names a folder
    with pytest.raises(WeightsError) as error:
        WinClipDetector()
    message = str(error.value)
    assert str(tmp_path / "from_env" / "open_clip" / "ViT-B-16-plus-240-laion400m_e31.pt") in message
    assert "python scripts/download.py weights" in message
    with pytest.raises(WeightsError, match=str(tmp_path / "given")):  # a setting wins over it
        WinClipDetector(weights_dir=str(tmp_path / "given"))


def test_named_model_loads_from_the_weights_dir_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered config + a state dict in the weights dir is all a named model needs (no network)."""
    source = tiny_clip(patch_size=16, seed=7)
    config = {"embed_dim": 32, "quick_gelu": False}
    config["vision_cfg"] = {"image_size": 64, "patch_size": 16, "width": 64, "head_width": 32, "layers": 4}
    config["text_cfg"] = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 4}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "anorefine-test-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    weights = tmp_path / "weights" / checkpoint_name("anorefine-test-clip", "openai")
    weights.parent.mkdir(parents=True)
    torch.save(source.state_dict(), weights)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_download)
    loaded = load_clip("anorefine-test-clip", "openai", tmp_path / "weights", image_size=64)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


@pytest.mark.slow
def test_train_py_runs_winclip_on_the_tiny_clip(demo_root: Path, tmp_path: Path) -> None:
    args = ["model=winclip", "model.clip=tiny", "model.image_size=96", f"dataset.root={demo_root}"]
    args += ["dataset.categories=[brick]", "trainer.enable_progress_bar=false", "logger=none"]
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    results = run.results
    assert results["model"] == "winclip" and results["smoke_only"] is True
    assert 0.0 <= results["metrics"]["brick"]["base"]["pixel_auroc"] <= 1.0
