"""MuSc: LNAMD, MSM and RsCIN against straightforward implementations of their definitions; the
blocked MSM against the unblocked one; the stream reference; the zero-shot data flow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_train

from anorefine.detectors import musc
from anorefine.detectors.musc import (
    MuscDetector,
    image_key,
    interval_mean,
    lnamd,
    mutual_scores,
    rscin,
    subset_members,
)
from anorefine.errors import AnorefineError


def reference_lnamd(features: torch.Tensor, r: int) -> torch.Tensor:
    """LayerNorm over (C,H,W) by hand, r×r window means with zeros outside the map, unit patches."""
    n, c, h, w = features.shape
    flat = features.reshape(n, -1)
    normed = (flat - flat.mean(1, keepdim=True)) / (flat.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    normed = normed.reshape(n, c, h, w)
    pad = (r - 1) // 2
    padded = torch.zeros(n, c, h + 2 * pad, w + 2 * pad, dtype=features.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = normed
    out = torch.zeros_like(normed)
    for y in range(h):
        for x in range(w):
            out[:, :, y, x] = padded[:, :, y : y + r, x : x + r].mean(dim=(2, 3))
    return out / out.norm(dim=1, keepdim=True)


def reference_msm(query: torch.Tensor, others: torch.Tensor, interval: tuple[float, float]) -> torch.Tensor:
    """Each patch's nearest-patch L2 distance to each other image (cdist), sorted, the interval's mean."""
    per_image = torch.stack([torch.cdist(query, other).min(dim=1).values for other in others], dim=1)
    count = per_image.shape[1]
    low, high = int(count * interval[0]), int(count * interval[1])
    return per_image.sort(dim=1).values[:, low:high].mean(dim=1)


def reference_rscin(scores: torch.Tensor, embeddings: torch.Tensor, k_list: list[int]) -> torch.Tensor:
    """The official loops: keep each row's k largest similarities, row-normalise, propagate, mean."""
    normalised = (scores - scores.min()) / (scores.max() - scores.min())
    similarity = embeddings @ embeddings.T
    results = []
    for k in k_list:
        kept = torch.zeros_like(similarity)
        for i in range(len(scores)):
            top = similarity[i].argsort(descending=True)[:k]
            kept[i, top] = similarity[i, top]
        results.append((kept / kept.sum(1, keepdim=True)) @ normalised)
    return torch.stack(results).mean(0)


@pytest.mark.parametrize("r", [1, 3, 5])
def test_lnamd_equals_its_definition(r: int) -> None:
    features = torch.randn(2, 6, 7, 9, generator=torch.Generator().manual_seed(r), dtype=torch.float64)
    assert torch.allclose(lnamd(features, r).double(), reference_lnamd(features, r), atol=1e-6)


def test_msm_equals_its_definition_and_blocks_change_nothing() -> None:
    generator = torch.Generator().manual_seed(0)
    patches = F.normalize(torch.randn(11, 20, 8, generator=generator, dtype=torch.float64), dim=-1)
    query, others = patches[0], patches[1:]
    expected = reference_msm(query, others, (0.0, 0.3))
    for block in (1, 3, 100):
        assert torch.allclose(mutual_scores(query, others, (0.0, 0.3), block).double(), expected, atol=1e-6)
    assert torch.equal(
        mutual_scores(query, others, (0.1, 0.6), 1), mutual_scores(query, others, (0.1, 0.6), 7)
    )


def test_bf16_matmuls_keep_the_nearest_distances_close_to_fp32() -> None:
    patches = F.normalize(torch.randn(9, 64, 32, generator=torch.Generator().manual_seed(4)), dim=-1)
    exact = mutual_scores(patches[0], patches[1:], (0.0, 0.3), 4)
    half = mutual_scores(patches[0].bfloat16(), patches[1:].bfloat16(), (0.0, 0.3), 4)
    assert half.dtype == torch.float32 and (half - exact).abs().max() < 0.02


def test_rscin_equals_its_definition() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(9, generator=generator, dtype=torch.float64)
    embeddings = F.normalize(torch.randn(9, 5, generator=generator, dtype=torch.float64), dim=-1)
    assert torch.allclose(
        rscin(scores, embeddings, (1, 2, 3)), reference_rscin(scores, embeddings, [1, 2, 3])
    )
    assert torch.equal(rscin(scores, embeddings, (0,)), scores)  # k 0: the scores as they are


def images(count: int, seed: int) -> torch.Tensor:
    noise = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(64, 64), mode="bilinear")


def test_a_stream_reference_never_looks_ahead() -> None:
    """Under reference=stream no score of an early image changes when a later image is replaced."""
    stream = images(12, seed=2)
    scores = []
    for later in (stream[8:], torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(9))):
        detector = MuscDetector(image_size=64, reference="stream", r_list=(1, 3))
        detector.set_reference(stream[:8])
        early = detector(stream[:8])
        detector.set_reference(torch.cat([stream[:8], later]))
        assert torch.equal(detector(stream[:8]).anomaly_map, early.anomaly_map)  # kept once given
        scores.append(early)
    assert torch.equal(scores[0].anomaly_map, scores[1].anomaly_map)
    assert torch.equal(scores[0].image_score, scores[1].image_score)


def test_a_category_reference_scores_each_image_against_the_others() -> None:
    batch = images(6, seed=3)
    detector = MuscDetector(image_size=64, r_list=(1,), k_list=(0,))
    detector.set_reference(batch)
    output = detector(batch[:2])
    layers, _ = detector.layer_features(batch)
    z = [lnamd(layer, 1).flatten(2).transpose(1, 2) for layer in layers]
    z[1] = F.normalize(F.interpolate(lnamd(layers[1], 1), size=layers[0].shape[-2:], mode="bilinear"), dim=1)
    z[1] = z[1].flatten(2).transpose(1, 2)
    expected = sum(reference_msm(layer[0].double(), layer[1:].double(), (0.0, 0.3)) for layer in z) / 2
    assert torch.allclose(output.anomaly_map[0].flatten().double(), expected, atol=1e-5)
    assert torch.allclose(output.image_score[0], output.anomaly_map[0].amax())  # k 0: no RsCIN
    outside = detector(images(1, seed=4))  # an image outside the reference: scored against all six
    assert outside.anomaly_map.shape == (1, *output.anomaly_map.shape[1:])
    assert torch.isfinite(outside.anomaly_map).all() and outside.image_score.shape == (1,)


def test_fewer_than_five_reference_images_is_an_error_naming_the_setting() -> None:
    with pytest.raises(AnorefineError, match=r"at least 5 reference images.*model\.reference=category"):
        MuscDetector(image_size=64).set_reference(images(4, seed=5))


@pytest.mark.slow
def test_a_zero_shot_run_reads_no_train_folder(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "only_test"
    shutil.copytree(demo_root / "brick", root / "brick", ignore=shutil.ignore_patterns("train"))
    args = ["model=musc", "dataset=folder", f"dataset.root={root}", "dataset.categories=[brick]"]
    run = run_train(
        [*args, "model.image_size=128", "trainer.enable_progress_bar=false", "logger=none"], tmp_path / "run"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (root / "brick" / "train").exists()
    metrics = run.results["metrics"]["brick"]["base"]
    assert metrics["pixel_auroc"] > 0.5 and metrics["image_auroc"] > 0.5
    assert run.results["zero_shot"] is True


def test_subsets_score_each_image_within_its_own_subset_only() -> None:
    """model.subsets=2: each folder is dealt round the subsets, and an image's map and score are those
    of a detector that saw its subset alone."""
    batch = images(12, seed=6)
    folders = ["good"] * 6 + ["scratch"] * 6
    split = MuscDetector(image_size=64, r_list=(1,), subsets=2)
    members = subset_members(split.subsets, folders, len(batch), split.reference)
    assert sorted(i for subset in members for i in subset) == list(range(12))
    assert all(sum(folders[i] == "good" for i in subset) == 3 for subset in members)  # interleaved
    split.set_reference(batch, folders)
    for subset in members:
        alone = MuscDetector(image_size=64, r_list=(1,))
        alone.set_reference(batch[subset])
        expected, got = alone(batch[subset]), split(batch[subset])
        assert torch.allclose(got.anomaly_map, expected.anomaly_map, atol=1e-6)
        assert torch.allclose(got.image_score, expected.image_score, atol=1e-6)


def test_subsets_need_a_category_reference_and_five_images_each() -> None:
    with pytest.raises(AnorefineError, match=r"model\.subsets=2.*model\.reference=category"):
        MuscDetector(image_size=64, reference="stream", subsets=2)
    with pytest.raises(AnorefineError, match=r"got 4.*model\.subsets=2"):
        MuscDetector(image_size=64, subsets=2).set_reference(images(8, seed=7), ["good"] * 8)


def straightforward_map(
    detector: MuscDetector, query: list[torch.Tensor], reference: list[torch.Tensor], exclude: int | None
) -> torch.Tensor:
    """MSM recomputed from scratch: the reference's LNAMD for this query alone, the image itself cut out
    of the reference, every nearest-patch distance from one unblocked matmul."""
    total = torch.zeros(query[0].shape[-2:].numel())
    for r in detector.r_list:
        for z, own in zip(detector.aggregated(reference, r), detector.aggregated(query, r), strict=True):
            others = z if exclude is None else torch.cat([z[:exclude], z[exclude + 1 :]])
            sims = own[0] @ others.reshape(-1, others.shape[-1]).T
            best = sims.view(len(own[0]), len(others), -1).amax(-1)
            total += interval_mean((2.0 - 2.0 * best).clamp_min(0.0).sqrt(), detector.interval)
    return (total / (len(detector.r_list) * len(reference))).view(1, *query[0].shape[-2:])


@pytest.mark.parametrize("block_similarities", [musc.CPU_BLOCK_SIMILARITIES, 2 * 8 * 8])
def test_cached_reference_patches_leave_every_map_and_score_unchanged(
    monkeypatch: pytest.MonkeyPatch, block_similarities: int
) -> None:
    """Reference and outside (synthetic) images, with the CPU's block cap as is and at two images a
    block: maps and scores equal those recomputed from scratch."""
    monkeypatch.setattr(musc, "CPU_BLOCK_SIMILARITIES", block_similarities)
    batch, synthetic = images(7, seed=10), images(3, seed=11)
    detector = MuscDetector(image_size=64)
    detector.set_reference(batch)
    reference, embeddings = detector.layer_features(batch)
    expected = [
        straightforward_map(detector, [f[i : i + 1] for f in reference], reference, exclude=i)
        for i in range(7)
    ]
    peaks = torch.stack([m.amax() for m in expected])
    assert torch.allclose(detector(batch).anomaly_map, torch.stack(expected), atol=1e-6)
    assert torch.allclose(detector(batch).image_score, rscin(peaks, embeddings, detector.k_list), atol=1e-6)
    for image in synthetic:
        query, embedding = detector.layer_features(image[None])
        patch_map = straightforward_map(detector, query, reference, exclude=None)
        score = rscin(
            torch.cat([peaks, patch_map.amax()[None]]), torch.cat([embeddings, embedding]), detector.k_list
        )
        output = detector(image[None])
        assert torch.allclose(output.anomaly_map[0], patch_map, atol=1e-6)
        assert torch.allclose(output.image_score[0], score[-1], atol=1e-6)


def test_the_reference_patches_are_built_once_per_reference_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring the references and three batches of outside images aggregates the reference once per r;
    a new reference set replaces the kept one (N·h·w·ΣC values per r)."""
    detector = MuscDetector(image_size=64)
    aggregated, built = detector.aggregated, []
    monkeypatch.setattr(
        detector, "aggregated", lambda layers, r: built.append(len(layers[0]) > 1) or aggregated(layers, r)
    )
    first, second = images(6, seed=12), images(8, seed=13)
    detector.set_reference(first)
    for seed in (14, 15, 16):
        detector(images(2, seed=seed))
    detector(first)
    assert sum(built) == len(detector.r_list)
    detector.set_reference(second)
    detector(images(2, seed=17))
    assert sum(built) == 2 * len(detector.r_list)
    keys = [image_key(image) for image in second]
    assert [[tuple(z.shape) for z in detector.reference_patches(keys, r)] for r in detector.r_list] == [
        [(8, 64, 40), (8, 64, 112)]
    ] * 3
    assert sum(built) == 2 * len(detector.r_list)


def test_reference_patches_past_their_memory_budget_keep_one_r_and_the_same_maps() -> None:
    """model.reference_cache_mb bounds what is kept between queries (N·h·w·ΣC values per r): past it
    only one r's patches stay, rebuilt per query batch, and every map and score is unchanged."""
    reference, outside = images(6, seed=12), images(2, seed=14)
    outputs = []
    for budget in (4096, 0):
        detector = MuscDetector(image_size=64, reference_cache_mb=budget)
        detector.set_reference(reference)
        outputs.append((detector(reference), detector(outside)))
        kept = detector._patches[1]
        assert sorted(kept) == (sorted(detector.r_list) if budget else [detector.r_list[-1]])
    for cached, bounded in zip(*outputs, strict=True):
        torch.testing.assert_close(bounded.anomaly_map, cached.anomaly_map, rtol=0, atol=0)
        torch.testing.assert_close(bounded.image_score, cached.image_score, rtol=0, atol=0)


def test_a_test_split_too_small_for_mutual_scoring_fails_before_any_model_is_built() -> None:
    """Each subset needs MIN_REFERENCE images; the check reads only the split's folders, so the run
    stops before a backbone is loaded (model.reference=stream is judged by its stream instead)."""
    MuscDetector.check_test_split({"reference": "category"}, "bottle", ["good"] * 5)
    with pytest.raises(AnorefineError, match=r"bottle: MuSc needs at least 5 reference images, got 4"):
        MuscDetector.check_test_split({"reference": "category"}, "bottle", ["good", "a", "b", "c"])
    with pytest.raises(AnorefineError, match=r"got 4: model.reference=category \(model.subsets=2\)"):
        MuscDetector.check_test_split({"reference": "category", "subsets": 2}, "bottle", ["good"] * 9)
    MuscDetector.check_test_split({"reference": "stream"}, "bottle", ["good"] * 3)
