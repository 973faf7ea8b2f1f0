"""Released AnomalyCLIP prompts: an official-format checkpoint for the tiny CLIP loads exactly, a bad
file or a mismatched setting fails before any model is built naming the key, and a run with
``model.prompt_ckpt`` trains nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_train
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from anorefine import plan
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.datasets import build_dataset
from anorefine.detectors.anomalyclip import AnomalyClipDetector
from anorefine.detectors.anomalyclip_prompts import OFFICIAL, read_prompt_file
from anorefine.detectors.anomalyclip_training import PromptTraining
from anorefine.errors import AnorefineError

SIZE = 70  # a 5×5 grid of the tiny CLIP's 14-px patches
#: The official settings (n_ctx 12, depth 9, length 4) on the tiny CLIP: width 64, depth 9 -> 3 of 4.
N_CTX, DEPTH, LENGTH, WIDTH = 12, 3, 4, 64
register_configs()


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every entry of the official ``AnomalyCLIP_PromptLearner.state_dict()`` at the tiny CLIP's sizes.

    Learnable: ctx_pos / ctx_neg (1 class, 1 template, n_ctx, width), compound_prompts_text.i
    (length, width); also stored: compound_prompt_projections.i (Linear(width, 896)), the token
    embeddings around the context (prefix 1 token, suffix 77 − 1 − n_ctx) and the token ids.
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).half()

    state = {"ctx_pos": draw(1, 1, N_CTX, WIDTH), "ctx_neg": draw(1, 1, N_CTX, WIDTH)}
    for i in range(DEPTH - 1):
        state[f"compound_prompts_text.{i}"] = torch.randn(LENGTH, WIDTH, generator=generator)
        state[f"compound_prompt_projections.{i}.weight"] = torch.randn(896, WIDTH)
        state[f"compound_prompt_projections.{i}.bias"] = torch.randn(896)
    for prompt in ("pos", "neg"):
        state[f"token_prefix_{prompt}"] = draw(1, 1, 1, WIDTH)
        state[f"token_suffix_{prompt}"] = draw(1, 1, 77 - 1 - N_CTX, WIDTH)
        state[f"tokenized_prompts_{prompt}"] = torch.zeros(1, 1, 77, dtype=torch.int32)
    return state


@pytest.fixture
def official(tmp_path: Path) -> Path:
    path = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": official_state()}, path)  # what the official train.py writes
    return path


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["model=anomalyclip", *overrides])


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_official_prompts_load_exactly_and_change_the_maps(official: Path) -> None:
    state = official_state()
    loaded = AnomalyClipDetector(clip="tiny", image_size=SIZE, prompt_ckpt=str(official))
    learner = loaded.prompt_learner
    assert torch.equal(learner.ctx_normal, state["ctx_pos"][0, 0].float())
    assert torch.equal(learner.ctx_anomalous, state["ctx_neg"][0, 0].float())
    assert len(learner.deep_prompts) == DEPTH - 1
    for i, deep in enumerate(learner.deep_prompts):
        assert torch.equal(deep, state[f"compound_prompts_text.{i}"])
    untrained = AnomalyClipDetector(clip="tiny", image_size=SIZE)
    batch = images(2, seed=1)
    assert not torch.allclose(loaded(batch).anomaly_map, untrained(batch).anomaly_map)
    assert loaded.load_prompts(official) == {}  # official files carry no config


def test_the_table_maps_every_official_learnable_key(official: Path) -> None:
    prompts = read_prompt_file(
        official, AnomalyClipDetector(clip="tiny", image_size=SIZE).prompt_learner.shape
    )
    assert prompts.format is OFFICIAL
    assert sorted(prompts.state) == ["ctx_anomalous", "ctx_normal", "deep_prompts.0", "deep_prompts.1"]
    assert all(v.dtype == torch.float32 for v in prompts.state.values())


def test_plan_accepts_the_official_file(official: Path) -> None:
    plan.check_weights(composed("model.clip=tiny", f"model.prompt_ckpt={official}").model)


def official_with(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    """The official checkpoint, its state dict edited."""
    state = {**official_state(), **change}
    state.pop(drop, None)
    return {"prompt_learner": state}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, r"f\.pth: no such file"),
        (official_with({}, drop="ctx_neg"), r"missing key 'ctx_neg' \(expected shape \(1, 1, 12, 64\)\)"),
        (
            official_with({"ctx_neg": torch.zeros(12, 64)}),
            r"key 'ctx_neg' has shape \(12, 64\), expected \(1, 1, 12, 64\)",
        ),
        (
            official_with({"compound_prompts_text.1": torch.zeros(4, 32)}),
            r"key 'compound_prompts_text\.1' has shape \(4, 32\), expected \(4, 64\)",
        ),
        (
            official_with({"ctx_pos": torch.zeros(1, 1, 12, 64, dtype=torch.int64)}),
            r"'ctx_pos' holds torch\.int64",
        ),
        (
            official_with({"visual_adapter.weight": torch.zeros(3)}),
            r"unexpected key 'visual_adapter\.weight'",
        ),
        ({"prompt_learner": {"weight": torch.zeros(3)}}, r"missing key 'ctx_normal'"),
        ({"state_dict": {}}, r"no 'prompt_learner' state dict in it \(found \['state_dict'\]\)"),
        (b"not a checkpoint", r"not a torch checkpoint"),
    ],
)
def test_a_bad_file_fails_before_any_model_is_built_naming_the_key(
    tmp_path: Path, payload: Any, message: str
) -> None:
    path = tmp_path / "f.pth"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    elif payload is not None:
        torch.save(payload, path)
    with pytest.raises(AnorefineError, match=message) as raised:
        plan.check_weights(composed("model.clip=tiny", f"model.prompt_ckpt={path}").model)
    assert str(path) in str(raised.value) and "model.prompt_ckpt=null" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.n_ctx=8"], r"12 context vectors per prompt, model\.n_ctx gives 8: set model\.n_ctx=12"),
        (["model.prompt_depth=12"], r"2 deep prompt tensors \(depth 3\), model\.prompt_depth gives depth 4"),
        (["model.prompt_length=2"], r"deep prompts have 4 tokens, model\.prompt_length gives 2"),
        # a real CLIP's sizes come from its open_clip config: nothing is built or read
        (
            ["model.clip=ViT-L-14-336", "model.weights=random"],
            r"64-wide, model\.clip's text tower is 768-wide",
        ),
    ],
)
def test_settings_that_do_not_match_the_checkpoint_fail_naming_the_setting(
    official: Path, overrides: list[str], message: str
) -> None:
    cfg = composed("model.clip=tiny", f"model.prompt_ckpt={official}", *overrides)
    with pytest.raises(AnorefineError, match=message):
        plan.check_weights(cfg.model)


def test_a_given_checkpoint_skips_prompt_training(official: Path, tmp_path: Path) -> None:
    def no_trainer(**kwargs: Any) -> Any:
        raise AssertionError("a trainer was built although model.prompt_ckpt is set")

    cfg = composed("model.clip=tiny", f"model.prompt_ckpt={official}", f"paths.data_dir={tmp_path}")
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    prepared = PromptTraining().prepare(settings, build_dataset(cfg.dataset), 0, tmp_path, no_trainer)
    assert prepared == official
    assert list(tmp_path.iterdir()) == [official]  # no auxiliary data generated, no prompts written


@pytest.mark.slow
def test_train_py_with_released_prompts_trains_nothing(
    demo_root: Path, official: Path, tmp_path: Path
) -> None:
    args = [
        "model=anomalyclip",
        "model.clip=tiny",
        f"model.image_size={SIZE}",
        f"model.prompt_ckpt={official}",
    ]
    args += [f"dataset.root={demo_root}", "dataset.categories=[brick]", f"paths.data_dir={tmp_path / 'data'}"]
    args += ["trainer.enable_progress_bar=false", "logger=none"]
    bad = run_train([*args, "model.n_ctx=8"], tmp_path / "bad")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert re.search(r"epoch_15\.pth: .* set model\.n_ctx=12", bad.stderr)
    run = run_train(args, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.results["config"]["model"]["prompt_ckpt"] == str(official)  # the prompts used, on record
    assert not (tmp_path / "run" / "anomalyclip_prompts.pt").exists()  # no prompts trained
    assert not (tmp_path / "data" / "demo_aux").exists()  # nor their auxiliary data generated
    assert 0.0 <= run.results["metrics"]["brick"]["base"]["pixel_auroc"] <= 1.0
