"""The package installs from its wheel, non-editable, and runs from any folder with its own configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN

#: What a source tree needs to build the wheel (no outputs, virtual environments or data).
SOURCE = ("pyproject.toml", "README.md", "anorefine")


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of the source (the checkout keeps no build/ folder) in
    pip's isolated build environment, as a user's ``pip install .`` builds it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-w",
        wheels,
        source,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = wheels.glob("anorefine-*.whl")
    return wheel


def fresh_environment(tmp_path: Path) -> Path:
    """A new virtual environment that sees this one's dependencies (a path line, not its .pth files:
    the editable install of the checkout stays out) but not the checkout; returns its bin folder."""
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = env / "lib" / version / "site-packages"
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_demo_from_another_folder(tmp_path: Path, demo_root: Path) -> None:
    wheel = build_wheel(tmp_path)
    bin_dir = fresh_environment(tmp_path)
    python = bin_dir / "python"
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import anorefine.conf as c; print(c.CONF_DIR)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    )  # fmt: skip
    conf_dir = Path(where.stdout.strip())
    assert conf_dir.is_relative_to(tmp_path / "env") and (conf_dir / "experiment" / "f2pad.yaml").is_file()
    run_dir = elsewhere / "run"
    smoke = [
        bin_dir / "anorefine", "train", f"dataset.root={demo_root}", "dataset.categories=[brick]",
        *TINY_RUN, "paths.fit_cache=null", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    done = subprocess.run(smoke, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "results.json").is_file() and "pixel_ap" in done.stdout
    usage = subprocess.run([bin_dir / "anorefine", "nope"], cwd=elsewhere, capture_output=True, text=True)
    assert usage.returncode == 2 and "unknown command 'nope'" in usage.stderr
