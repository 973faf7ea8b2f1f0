"""The weights download fetches what the configs name and skips files already present (no network)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import open_clip
import pytest
import timm

from anorefine.conf import CONF_DIR
from anorefine.detectors.backbones import WEIGHT_FILES
from anorefine.detectors.clip_models import checkpoint_name
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
