"""Shared fixtures: a generated demo dataset and a runner for train.py in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from anorefine.conf import CONF_DIR

REPO = Path(__file__).resolve().parent.parent
#: Overrides that make an end-to-end run take seconds on a 2-core CPU.
TINY_RUN = [
    "model.image_size=128",
    "model.coreset_ratio=0.05",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
#: ARD + PGT small enough for a test: two groups, one step each.
TINY_PGT = ["refiner=ard", "curriculum=pgt", "curriculum.group_size=26", "curriculum.steps_per_group=1",
            "curriculum.synthetic_per_group=2"]  # fmt: skip


@dataclass
class TrainRun:
    """What a `python train.py` subprocess left behind."""

    returncode: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def results(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "results.json").read_text())


def run_train(
    args: list[str],
    run_dir: Path,
    env: dict[str, str] | None = None,
    timeout: int = 600,
    entry: str = "train.py",
) -> TrainRun:
    """Run train.py (or ``entry``, e.g. predict.py) with Hydra overrides, its run directory pinned
    to ``run_dir``.

    Unless ``args`` set ``paths.fit_cache``, every run fits its own detector (no shared fit cache).
    """
    no_cache = [] if any(a.startswith("paths.fit_cache=") for a in args) else ["paths.fit_cache=null"]
    command = [sys.executable, str(REPO / entry), *args, *no_cache, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    return TrainRun(done.returncode, done.stdout, done.stderr, run_dir)


def compose_with(overrides: list[str], config_name: str = "train") -> DictConfig:
    """conf/train.yaml (or ``config_name``) composed with ``overrides``, schemas registered."""
    from anorefine.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, generated once per test session."""
    from anorefine.data import ensure_demo_dataset

    return ensure_demo_dataset(tmp_path_factory.mktemp("data") / "demo", seed=0)


@pytest.fixture(scope="session")
def predicted(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainRun:
    """A predict run (PatchCore + ARD trained by PGT) fitted on brick's normal images that scored brick's
    test folder; shared by the inspection and export tests, which write nothing into its folder."""
    images = f"predict.images={demo_root}/brick/test"
    args = [f"dataset.root={demo_root}", "dataset.categories=[brick]", images, *TINY_RUN, *TINY_PGT]
    run = run_train(args, tmp_path_factory.mktemp("predict") / "first", entry="predict.py")
    assert run.returncode == 0, run.stderr[-3000:]
    return run
