"""PatchCore behind the contract: offline backbone weights, coreset parity with anomalib, scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.models.components.sampling import KCenterGreedy
from torch.utils.data import DataLoader

from anorefine.data import AnomalyImageDataset
from anorefine.datasets import open_dataset
from anorefine.detectors.backbones import build_feature_extractor, efficientnet_lite0_state_dict
from anorefine.detectors.coreset import greedy_coreset_indices, sample_coreset
from anorefine.detectors.patchcore import PatchCoreDetector
from anorefine.errors import WeightsError
from anorefine.refiners.base import baseline_map
from anorefine.refiners.baseline import BaselineRefiner


def test_efficientnet_lite0_weights_come_from_the_package() -> None:
    state = efficientnet_lite0_state_dict()
    assert len(state) == 296
    extractor = build_feature_extractor("efficientnet_lite0", ["blocks.2", "blocks.4"], "unused")
    loaded = extractor.feature_extractor.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], state["conv_stem.weight"])
    assert torch.equal(loaded["blocks.4.0.conv_pw.weight"], state["blocks.4.0.conv_pw.weight"])
    assert loaded["conv_stem.weight"].std() > 0.05  # real weights, not an init


def test_missing_backbone_weights_name_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"wide_resnet50_2.*download\.py weights"):
        build_feature_extractor("wide_resnet50_2", ["layer2", "layer3"], tmp_path)


def test_greedy_coreset_selects_the_same_indices_as_anomalib() -> None:
    features = torch.randn(2000, 1, 24, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    reference = KCenterGreedy(features, 0.05).select_coreset_idxs()  # 3-d input: no projection
    torch.manual_seed(5)
    start = int(torch.randint(high=2000, size=(1,)).squeeze())
    ours = greedy_coreset_indices(features[:, 0], len(reference), start)
    assert ours.tolist() == reference


def test_coreset_keeps_the_requested_fraction_of_rows() -> None:
    embedding = torch.randn(1000, 16)
    kept = sample_coreset(embedding, 0.1, projection_dim=8, generator=torch.Generator().manual_seed(0))
    assert kept.shape == (100, 16)
    assert all((embedding == row).all(1).any() for row in kept)


@pytest.fixture(scope="module")
def fitted(demo_root: Path) -> tuple[PatchCoreDetector, AnomalyImageDataset]:
    detector = PatchCoreDetector(image_size=128, coreset_ratio=0.05).eval()
    train = AnomalyImageDataset(open_dataset("demo", demo_root).records("gravel", "train")[:20], 128)
    detector.fit(DataLoader(train, batch_size=10))
    test = AnomalyImageDataset(open_dataset("demo", demo_root).records("gravel", "test"), 128)
    return detector, test


def test_output_contract(fitted) -> None:
    detector, test = fitted
    images = torch.stack([test[i]["image"] for i in range(3)])
    output = detector(images)
    assert output.anomaly_map.shape == (3, 1, 16, 16) and output.anomaly_map.dtype == torch.float32
    assert output.features.shape[:1] + output.features.shape[2:] == (3, 16, 16)
    assert output.image_score.shape == (3,)
    assert (output.stride, output.receptive_field) == (8, 24)
    assert output.anomaly_map.max() > 1.0  # raw distances, not normalised to [0, 1]


def test_defective_pixels_score_higher_than_normal_ones(fitted) -> None:
    detector, test = fitted
    batch = next(iter(DataLoader(test, batch_size=len(test))))
    output = detector(batch["image"])
    maps = baseline_map(output.anomaly_map, (128, 128))
    assert maps[batch["mask"] > 0].mean() > maps[batch["mask"] == 0].mean()
    assert output.image_score[batch["label"] == 1].mean() > output.image_score[batch["label"] == 0].mean()
    assert torch.equal(BaselineRefiner()(batch["image"], output), maps)  # `none` is exactly the base map


def stepwise_greedy(features: torch.Tensor, size: int, start: int) -> list[int]:
    """The k-center greedy written straight from its definition: one full pass per pick."""
    chosen = [start]
    min_dist = (features - features[start]).pow(2).sum(1)
    while len(chosen) < size:
        chosen.append(int(torch.argmax(min_dist)))
        min_dist = torch.minimum(min_dist, (features - features[chosen[-1]]).pow(2).sum(1))
    return chosen


@pytest.mark.parametrize("pool_size", [1, 7, 64, 5000])
def test_pooled_greedy_picks_what_one_pass_per_pick_does(pool_size: int) -> None:
    features = torch.randn(3000, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = greedy_coreset_indices(features, 300, 11, pool_size=pool_size)
    assert ours.tolist() == stepwise_greedy(features, 300, 11)
