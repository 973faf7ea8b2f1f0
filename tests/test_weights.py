"""The weights download fetches what the configs name and skips files already present (no network)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import open_clip
import pytest
import timm
import torch
from safetensors.torch import load_file

from anorefine.conf import CONF_DIR
from anorefine.detectors.backbones import WEIGHT_FILES, backbone_weight_file
from anorefine.detectors.clip_models import checkpoint_name
from anorefine.errors import WeightsError
from anorefine.weights_download import configured_clips, download_backbone_weights, download_clip_weights


def test_download_helper_fetches_what_the_configs_name_and_skips_present_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [("ViT-B-16-plus-240", "laion400m_e31"), ("ViT-L-14-336", "openai")]
    assert configured_clips(CONF_DIR / "model") == expected
    for model, pretrained in expected:
        (tmp_path / checkpoint_name(model, pretrained)).parent.mkdir(exist_ok=True)
        (tmp_path / checkpoint_name(model, pretrained)).write_bytes(b"present")
    monkeypatch.setattr(open_clip, "create_model", mock.Mock(side_effect=AssertionError("downloaded")))
    assert download_clip_weights(tmp_path, expected) == [
        tmp_path / checkpoint_name(*pair) for pair in expected
    ]
    monkeypatch.setattr(timm, "create_model", mock.Mock(side_effect=AssertionError("downloaded")))
    for names in WEIGHT_FILES.values():
        (tmp_path / names[0]).parent.mkdir(exist_ok=True)
        (tmp_path / names[0]).write_bytes(b"present")
    assert download_backbone_weights(tmp_path) == [
        tmp_path / WEIGHT_FILES[b][0] for b in sorted(WEIGHT_FILES)
    ]


def test_any_timm_backbone_is_fetched_where_the_detectors_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scripts/download.py weights --backbone resnet50``: the file a missing-weights error names."""
    layer = torch.nn.Linear(2, 3)
    monkeypatch.setattr(timm, "create_model", mock.Mock(return_value=layer))  # the download itself
    assert download_backbone_weights(tmp_path, ["resnet50"]) == [tmp_path / "timm" / "resnet50.safetensors"]
    saved = load_file(str(tmp_path / "timm" / "resnet50.safetensors"))
    assert torch.equal(saved["weight"], layer.weight) and torch.equal(saved["bias"], layer.bias)
    assert backbone_weight_file("resnet50", tmp_path) == tmp_path / "timm" / "resnet50.safetensors"
    with pytest.raises(
        WeightsError, match=r"timm/resnet101\.safetensors.*weights --backbone resnet101 --dir"
    ):
        backbone_weight_file("resnet101", tmp_path)
