"""AnomalyCLIP on a tiny CLIP: DPAM against a by-hand computation, prompt training, checkpoints, contract."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_train
from torch.utils.data import DataLoader, Dataset

from anorefine.datasets import open_dataset
from anorefine.detectors.anomalyclip import AnomalyClipDetector, rescale_layer
from anorefine.detectors.anomalyclip_training import (
    PromptTraining,
    PromptTrainingModule,
    dice_loss,
    focal_loss,
    prompt_loss,
    resolve_aux_dataset,
)
from anorefine.detectors.clip_models import set_image_size, tiny_clip
from anorefine.errors import AnorefineError, WeightsError
from anorefine.weights import WEIGHTS_ENV

SIZE = 70  # 5×5 grid of 14-px patches; the tiny CLIP is built at 56² (4×4), so pos-embed is interpolated
Trainer = functools.partial(
    L.Trainer,
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    enable_checkpointing=False,
    enable_model_summary=False,
)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


class AuxData(Dataset):
    """Random images, half anomalous with a square mask: the shape of an auxiliary test split."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, Any]:
        mask = torch.zeros(1, SIZE, SIZE)
        if index % 2:
            mask[:, 20:40, 25:50] = 1
        return {"image": images(1, seed=100 + index)[0], "mask": mask, "label": index % 2, "has_mask": True}


def aux_loader() -> DataLoader:
    return DataLoader(AuxData(), batch_size=2, shuffle=False)


def detector(**kwargs: Any) -> AnomalyClipDetector:
    return AnomalyClipDetector(clip="tiny", image_size=SIZE, **kwargs)


@pytest.fixture(scope="module")
def tiny() -> AnomalyClipDetector:
    return detector()


def attention_by_hand(attn: torch.nn.MultiheadAttention, x: torch.Tensor, vv: bool) -> torch.Tensor:
    """Multi-head attention of (L,N,D) tokens from the layer's in_proj weights, q=k=v=V when ``vv``."""
    _, batch, dim = x.shape
    heads, head_dim = attn.num_heads, dim // attn.num_heads
    q, k, v = (
        x @ w.T + b for w, b in zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3), strict=True)
    )
    if vv:
        q = k = v
    outputs = []
    for n in range(batch):
        per_head = []
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            weights = torch.softmax(q[:, n, cols] @ k[:, n, cols].T / math.sqrt(head_dim), dim=-1)
            per_head.append(weights @ v[:, n, cols])
        outputs.append(torch.cat(per_head, dim=-1))
    return torch.stack(outputs, dim=1) @ attn.out_proj.weight.T + attn.out_proj.bias


def test_tiny_rescales_the_vit_l_layer_settings(tiny: AnomalyClipDetector) -> None:
    assert tiny.smoke_only
    assert tiny.feature_layers == (4,)  # layer 24 of 24 -> 4 of 4
    assert tiny.dpam_start_layer == 2  # layers 6..24 -> 2..4
    assert len(tiny.prompt_learner.deep_prompts) == 2  # depth 9 of 12 text layers -> 3 of 4
    assert [rescale_layer(k, 24, 24) for k in (1, 6, 24)] == [1, 6, 24]


def test_dpam_patch_path_equals_v_v_attention_by_hand(tiny: AnomalyClipDetector) -> None:
    visual = tiny.clip.visual
    batch = tiny.prepare_images(images(2, seed=1))
    image_embedding, patches = tiny.encode_image(batch)
    x = visual.conv1(batch).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x).transpose(0, 1)
    patch_path = None
    for layer, block in enumerate(visual.transformer.resblocks, start=1):
        if layer >= 2:
            update = attention_by_hand(block.attn, block.ln_1(x), vv=True)
            patch_path = (x if patch_path is None else patch_path) + update
        x = x + attention_by_hand(block.attn, block.ln_1(x), vv=False)  # the original q-k path
        x = x + block.mlp(block.ln_2(x))
    expected_patches = visual.ln_post(patch_path[1:].transpose(0, 1)) @ visual.proj
    assert (patches[0] - expected_patches).abs().max() <= 1e-5
    assert (
        image_embedding - x[0] @ visual.proj
    ).abs().max() <= 1e-5  # official: no ln_post on the image path


def test_without_dpam_the_patch_tokens_are_open_clips() -> None:
    plain = detector()
    plain.dpam_start_layer = 5  # past the tiny CLIP's 4 layers: no DPAM
    batch = plain.prepare_images(images(1, seed=2))
    _, patches = plain.encode_image(batch)
    plain.clip.visual.output_tokens = True
    _, tokens = plain.clip.visual(batch)  # open_clip's own forward: ln_post'd, unprojected tokens
    assert (patches[0] - tokens @ plain.clip.visual.proj).abs().max() <= 1e-5


def test_position_embedding_interpolation_keeps_the_class_token() -> None:
    clip = tiny_clip(patch_size=14, seed=0)
    before = clip.visual.positional_embedding.detach().clone()
    set_image_size(clip.visual, 98)
    after = clip.visual.positional_embedding
    assert after.shape == (7 * 7 + 1, 64) and clip.visual.grid_size == (7, 7)
    assert torch.equal(after[0], before[0])
    grid = before[1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(7, 7), mode="bilinear", align_corners=False)
    assert torch.allclose(after[1:], expected.permute(0, 2, 3, 1).reshape(49, 64))


def test_output_contract(tiny: AnomalyClipDetector) -> None:
    output = tiny(images(2, seed=3))
    assert output.anomaly_map.shape == (2, 1, 5, 5) and output.anomaly_map.dtype == torch.float32
    assert output.features.shape == (2, 32, 5, 5)
    assert output.image_score.shape == (2,)
    assert (output.stride, output.receptive_field) == (14, 14)
    assert isinstance(output.stride, int) and isinstance(output.receptive_field, int)
    flat = output.anomaly_map.flatten(1)  # softmax probabilities, not min-max normalised per image
    assert (flat.amin(dim=1) > 0).all() and (flat.amax(dim=1) < 1).all()
    assert ((output.image_score > 0) & (output.image_score < 1)).all()


def test_several_feature_layers_sum_their_maps() -> None:
    both = detector(feature_layers=[18, 24])  # rescaled to layers 3 and 4 of the tiny CLIP
    assert both.feature_layers == (3, 4)
    batch = images(1, seed=4)
    _, patches = both.encode_image(both.prepare_images(batch))
    text = both.encode_text()
    expected = sum(both.patch_probabilities(p, text)[:, 1:] for p in patches)
    assert torch.allclose(both(batch).anomaly_map, expected)


def test_losses_match_their_definitions() -> None:
    gt = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert dice_loss(gt, gt) == 0
    assert dice_loss(1 - gt, gt) == pytest.approx(1 - 1 / 5)  # no overlap: 1 − (0 + 1) / (2 + 2 + 1)
    half = torch.full((1, 2, 2, 2), 0.5)
    assert focal_loss(half, gt).item() == pytest.approx(-((0.5 - 1e-5) ** 2) * math.log(0.5 + 1e-5), rel=1e-4)
    assert focal_loss(torch.stack([1 - gt, gt], dim=1), gt) < 1e-8


def test_a_training_step_moves_only_the_prompts() -> None:
    model = detector()
    module = PromptTrainingModule(model)
    optimizer = module.configure_optimizers()
    frozen = {k: v.clone() for k, v in model.clip.state_dict().items()}
    prompts = {k: v.detach().clone() for k, v in model.prompt_learner.state_dict().items()}
    batch = next(iter(aux_loader()))
    module.train()
    assert not model.clip.training
    losses = []
    for _ in range(3):
        loss, _ = prompt_loss(model, batch["image"], batch["mask"], batch["label"])
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.clip.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prompt_learner.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(torch.equal(v, frozen[k]) for k, v in model.clip.state_dict().items())
    assert all(not torch.equal(v, prompts[k]) for k, v in model.prompt_learner.state_dict().items())


def test_prompt_checkpoint_round_trip(tmp_path: Path) -> None:
    trained = detector(prompt_seed=1)
    with torch.no_grad():
        for param in trained.prompt_learner.parameters():
            param.add_(0.1)
    path = trained.save_prompts(tmp_path / "prompts.pt", trained.prompt_config(), steps=0)
    saved = torch.load(path, weights_only=True)["prompt_learner"]
    learnable = dict(trained.prompt_learner.named_parameters())
    assert set(saved) == set(learnable) == {"ctx_normal", "ctx_anomalous", "deep_prompts.0", "deep_prompts.1"}
    loaded = detector(prompt_ckpt=str(path))
    batch = images(2, seed=6)
    assert torch.equal(loaded(batch).anomaly_map, trained(batch).anomaly_map)
    assert not torch.equal(detector()(batch).anomaly_map, trained(batch).anomaly_map)
    assert [p.name for p in tmp_path.iterdir()] == ["prompts.pt"]  # the atomic write left no temp file


def fit_trainer(purpose: str = "evaluate", **overrides: Any) -> L.Trainer:
    return Trainer(**overrides)


def test_train_or_load_prompts_trains_once_then_reuses_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "prompts" / "anomalyclip_prompts.pt"
    model, training = detector(), PromptTraining(max_steps=2)
    initial = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    assert training.train_or_load(model, aux_loader(), ckpt, fit_trainer, {"aux": "test"}) == ckpt
    payload = torch.load(ckpt, weights_only=True)
    assert set(payload["prompt_learner"]) == set(initial) and payload["steps"] == 2
    assert payload["config"] == {**model.prompt_config(), "training": training.recipe(), "aux": "test"}
    assert any(not torch.equal(v, initial[k]) for k, v in model.prompt_learner.state_dict().items())

    def no_training(**kwargs: Any) -> L.Trainer:
        raise AssertionError("trained although a checkpoint for this config exists")

    again = detector()
    assert training.train_or_load(again, None, ckpt, no_training, {"aux": "test"}) == ckpt
    batch = images(1, seed=7)
    assert torch.equal(again(batch).anomaly_map, model(batch).anomaly_map)
    given = detector(prompt_ckpt=str(ckpt))
    assert training.train_or_load(given, None, tmp_path / "other.pt", no_training) == ckpt
    other = PromptTraining(max_steps=2, lr=0.01)
    with pytest.raises(AnorefineError, match="no prompt checkpoint for this config"):
        other.train_or_load(detector(), None, ckpt, no_training, {"aux": "test"})


def test_aux_dataset_follows_the_zero_shot_protocol() -> None:
    assert resolve_aux_dataset("auto", "mvtec") == "visa"
    assert resolve_aux_dataset("auto", "visa") == "mvtec"
    assert resolve_aux_dataset("auto", "demo") == "demo_aux"
    assert resolve_aux_dataset("demo", "demo") == "demo"
    message = (
        r"^prepare\.aux_dataset=auto knows no auxiliary dataset for dataset=folder: set "
        r"prepare\.aux_dataset=mvtec or prepare\.aux_dataset=visa \(or prepare\.aux_dataset=folder,"
    )
    with pytest.raises(AnorefineError, match=message):
        resolve_aux_dataset("auto", "folder")
    assert resolve_aux_dataset("folder", "folder") == "folder"  # the value the message suggests is valid
    with pytest.raises(AnorefineError, match=r"unknown dataset 'visaa': use one of .*visa"):
        resolve_aux_dataset("visaa", "mvtec")


def test_missing_weights_name_the_file_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError) as error:
        AnomalyClipDetector()
    message = str(error.value)
    assert str(tmp_path / "open_clip" / "ViT-L-14-336-openai.pt") in message
    assert "python scripts/download.py weights" in message


@pytest.mark.slow
def test_train_py_trains_prompts_on_a_second_demo_then_evaluates(demo_root: Path, tmp_path: Path) -> None:
    """On the demo, ``aux_dataset=auto`` trains the prompts on another demo: never on the test images."""
    args = ["model=anomalyclip", "model.clip=tiny", "model.image_size=70", "prepare.max_steps=2"]
    args += [f"dataset.root={demo_root}", "dataset.categories=[brick]", f"paths.data_dir={tmp_path}"]
    args += ["trainer.enable_progress_bar=false", "logger=none"]
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    results = run.results
    assert results["model"] == "anomalyclip" and results["smoke_only"] is True
    assert 0.0 <= results["metrics"]["brick"]["base"]["pixel_auroc"] <= 1.0
    prompts = torch.load(tmp_path / "run" / "anomalyclip_prompts.pt", weights_only=True)
    aux = prompts["config"]["aux"]
    assert prompts["steps"] == 2 and aux == {"dataset": "demo_aux", "root": str(tmp_path / "demo_aux")}
    marker = json.loads((tmp_path / "demo_aux" / ".anorefine_demo.json").read_text())
    test_marker = json.loads((demo_root / ".anorefine_demo.json").read_text())
    assert marker["seed"] == test_marker["seed"] + 1


def test_the_run_stage_asks_for_an_aux_dataset_it_cannot_infer(tmp_path: Path) -> None:
    model = {"clip": "tiny", "image_size": SIZE, "prompt_ckpt": None, "weights_dir": "weights"}
    folder = open_dataset("folder", tmp_path)
    with pytest.raises(AnorefineError, match=r"prepare\.aux_dataset"):
        PromptTraining().prepare(model, folder, 0, tmp_path, fit_trainer)
    model["prompt_ckpt"] = "given.pt"
    assert PromptTraining().prepare(model, folder, 0, tmp_path, fit_trainer) == Path("given.pt")


def test_layer_settings_beyond_the_model_fail_naming_the_key() -> None:
    with pytest.raises(AnorefineError, match=r"model\.feature_layers=\[5\]"):
        detector(feature_layers=[30])  # rescaled to layer 5 of the 4-layer tiny CLIP
