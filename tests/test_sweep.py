"""Multirun sweeps through train.py: resume after a kill, failure.json, the leaderboard at the end."""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from conftest import REPO, run_train
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.types import RunMode
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from omegaconf import DictConfig
from test_report import image_sources, loaded_images, render

from anorefine.assembly import trainer_factory
from anorefine.cli import check_ddp_launch
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.errors import AnorefineError
from anorefine.leaderboard import COLUMNS
from anorefine.run_folder import MAX_KEY_LENGTH, job_key
from anorefine.sweep import expected_jobs

#: Four cheap jobs: seed × refiner.sigma on one demo category at 64 px.
SWEEP = [
    "dataset.categories=[brick]",
    "model.image_size=64",
    "model.coreset_ratio=0.05",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "paths.fit_cache=null",
    "seed=0,1",
    "refiner.sigma=4,2",
]


#: One torch thread per job: on a small shared machine, idle OpenMP threads spin and double the CPU time.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def multirun_command(demo_root: Path, sweep_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "-m", f"dataset.root={demo_root}", *args,
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip


def results_files(sweep_dir: Path) -> list[Path]:
    return sorted(sweep_dir.glob("*/results.json"))


def kill_after_first_job(command: list[str], sweep_dir: Path, log: Path, timeout: float = 400) -> None:
    """Start a sweep in its own process group and SIGKILL the group once a job has finished."""
    with log.open("w") as stream:
        process = subprocess.Popen(
            command, cwd=REPO, env=ENV, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while not results_files(sweep_dir):
            assert process.poll() is None, (
                f"the sweep ended before a job finished:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "no job finished in time"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already ended: the assertion above says why
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def resumed_sweep(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-job sweep killed after its first job, then run again to the end."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "demo"
    command = multirun_command(demo_root, sweep_dir, *SWEEP)
    kill_after_first_job(command, sweep_dir, sweep_dir.parent / "killed.log")
    (first,) = results_files(sweep_dir)
    before = {"path": first, "mtime": first.stat().st_mtime_ns, "text": first.read_text()}
    rerun = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    return {"sweep_dir": sweep_dir, "first": before, "rerun": rerun}


@pytest.mark.slow
def test_rerun_skips_the_finished_job_and_finishes_the_rest(resumed_sweep: dict[str, Any]) -> None:
    rerun, first = resumed_sweep["rerun"], resumed_sweep["first"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert first["path"].stat().st_mtime_ns == first["mtime"]
    assert first["path"].read_text() == first["text"]
    assert rerun.stdout.count("skipped:") == 1
    found = results_files(resumed_sweep["sweep_dir"])
    assert len(found) == 4
    settings = {(r["config"]["seed"], r["config"]["refiner"]["sigma"]) for r in map(read_json, found)}
    assert settings == {(0, 4.0), (0, 2.0), (1, 4.0), (1, 2.0)}
    manifest = read_json(resumed_sweep["sweep_dir"] / "sweep.json")
    assert sorted(job["dir"] for job in manifest["jobs"]) == sorted(path.parent.name for path in found)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def as_float(text: str) -> float | None:
    return None if text == "" else float(text)


@pytest.mark.slow
def test_the_leaderboard_carries_the_numbers_of_the_results(resumed_sweep: dict[str, Any]) -> None:
    sweep_dir = resumed_sweep["sweep_dir"]
    rows = list(csv.DictReader((sweep_dir / "LEADERBOARD.csv").open()))
    runs = {str(path.parent): read_json(path) for path in results_files(sweep_dir)}
    run_rows = [row for row in rows if row["table"] == "run" and row["category"] == "mean"]
    assert sorted(row["path"] for row in run_rows) == sorted(runs)
    for row in run_rows:
        metrics = runs[row["path"]]["metrics"]["mean"]
        for key in COLUMNS:
            assert as_float(row[f"{key}_base"]) == metrics["base"][key]
            assert as_float(row[f"{key}_refined"]) == metrics["refined"][key]
    ablation = {row["setting"]: row for row in rows if row["table"] == "ablation"}
    assert set(ablation) == {"base map", "refiner.sigma=2.0", "refiner.sigma=4.0"}  # resolved values
    base = ablation.pop("base map")
    assert (base["method"], base["runs"]) == ("none", "4")
    assert as_float(base["pixel_ap_refined"]) == pytest.approx(
        statistics.fmean(r["metrics"]["mean"]["base"]["pixel_ap"] for r in runs.values()), abs=1e-15
    )
    for setting, row in ablation.items():
        sigma = float(setting.split("=")[1])
        same = [r["metrics"]["mean"] for r in runs.values() if r["config"]["refiner"]["sigma"] == sigma]
        assert row["runs"] == "2" and row["seeds"] == "0 1"
        values = [m["refined"]["pixel_ap"] for m in same]
        assert as_float(row["pixel_ap_refined"]) == pytest.approx(statistics.fmean(values), abs=1e-15)
        assert as_float(row["pixel_ap_refined_std"]) == pytest.approx(statistics.stdev(values), abs=1e-15)
    markdown = (sweep_dir / "LEADERBOARD.md").read_text()
    assert "## demo" in markdown and "refiner.sigma" in markdown
    assert (sweep_dir / "LEADERBOARD.tex").is_file()


@pytest.mark.slow
def test_every_run_has_a_report_with_existing_figures(resumed_sweep: dict[str, Any], tmp_path: Path) -> None:
    for results in results_files(resumed_sweep["sweep_dir"]):
        page = (results.parent / "report.html").read_text()
        sources = image_sources(page)
        assert sources == ["figures/brick_samples.png", "figures/brick_pr.png"]
        assert all((results.parent / source).is_file() for source in sources)
    dom = render(results.parent / "report.html", tmp_path)  # the last one, in headless Chromium
    assert loaded_images(dom) == (2, 2)


@pytest.mark.slow
def test_a_failing_job_writes_failure_json_and_the_sweep_goes_on(demo_root: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "failing"
    command = multirun_command(demo_root, sweep_dir, "dataset.categories=[marble],[granite]", "logger=none")
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    failures = sorted(sweep_dir.glob("*/failure.json"))
    assert len(failures) == 2  # the second job ran after the first had failed
    failure = read_json(failures[0])
    assert "unknown category" in failure["error"] and "Traceback" in failure["traceback"]
    assert any(override.startswith("dataset.categories=[") for override in failure["overrides"])
    listed = (sweep_dir / "LEADERBOARD.md").read_text()
    assert listed.count("| failed |") == 2 and "unknown category 'marble'" in listed


@pytest.mark.parametrize(
    ("dirname", "expected"),
    [
        ("", "default"),
        ("model=padim,seed=1", "model=padim,seed=1"),
        ("model.weights_dir=/data/w,seed=0", "model.weights_dir=_data_w,seed=0-"),
        ("dataset.root=/data/mvtec,paths.fit_cache=null,seed=1", "seed=1"),  # neutral keys dropped
        ("x=" + "a" * 300, "x=" + "a" * (MAX_KEY_LENGTH - 2) + "-"),
    ],
)
def test_job_keys_are_safe_folder_names(dirname: str, expected: str) -> None:
    key = job_key(dirname)
    assert key.startswith(expected)
    assert "/" not in key and len(key) <= MAX_KEY_LENGTH + 9
    assert job_key(dirname) == key and job_key(dirname + "0") != key


EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def compose() -> Iterator[Callable[..., DictConfig]]:
    """Hydra's compose API on conf/ (train.yaml)."""
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield functools.partial(hydra_compose, "train")


def pairwise_cover(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that together contain every pair of override values of the sweep (cheaper than all)."""
    seen: set[tuple[str, str]] = set()
    chosen = []
    for job in jobs:
        pairs = set(itertools.combinations(sorted(job["overrides"]), 2)) or {(*job["overrides"], "")}
        if not pairs <= seen:
            seen |= pairs
            chosen.append(job)
    return chosen


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name: str, compose: Callable[..., DictConfig]) -> None:
    config = compose([f"experiment={name}"], return_hydra_config=True)
    assert config.hydra.job.name == name  # its own sweep folder: <output_dir>/multirun/<name>
    jobs = expected_jobs(config)
    assert jobs and len({job["dir"] for job in jobs}) == len(jobs)
    for job in pairwise_cover(jobs):
        composed = compose(job["overrides"])
        if name.startswith("demo_"):
            assert composed.dataset.name == "demo"


def test_the_anorefiner_table_runs_each_detector_at_its_published_settings(
    compose: Callable[..., DictConfig],
) -> None:
    """MuSc on ViT-L-14-336 at 518² with RsCIN k 1/2/3 on MVTec AD and 1/8/9 on VisA (not the offline
    default backbone); WinCLIP and AnomalyCLIP on their configs' published CLIPs; every job under the
    protocol of its published row, so the leaderboard can join them."""
    jobs = expected_jobs(compose(["experiment=anorefiner"], return_hydra_config=True))
    assert len(jobs) == 18
    seen, protocols = {}, {}
    for job in jobs:
        if "+experiment/method=none" in job["overrides"]:
            config = compose(job["overrides"])
            seen[(config.dataset.name, config.model.name)] = config.model
            protocols[(config.dataset.name, config.model.name)] = config.eval.protocol
    assert len(seen) == 6
    for dataset, k_list in (("mvtec", [1, 2, 3]), ("visa", [1, 8, 9])):
        musc = seen[(dataset, "musc")]
        assert (musc.backbone, musc.image_size, list(musc.k_list)) == ("ViT-L-14-336", 518, k_list)
        assert (seen[(dataset, "winclip")].clip, seen[(dataset, "anomalyclip")].clip) == (
            "ViT-B-16-plus-240",
            "ViT-L-14-336",
        )
        assert seen[(dataset, "winclip")].image_size == 240
    # each job under the evaluation of the published row it is compared with (conf/paper/*.yaml)
    assert set(protocols.values()) == {"anomalyclip", "musc"}
    assert all(
        protocol == ("musc" if model == "musc" else "anomalyclip")
        for (_, model), protocol in protocols.items()
    )


#: Presets that already run offline on generated data, so they need no demo twin.
OFFLINE_EXPERIMENTS = {"transfer"}


def test_every_demo_variant_has_its_full_experiment() -> None:
    demos = {name.removeprefix("demo_") for name in EXPERIMENTS if name.startswith("demo_")}
    full = {name for name in EXPERIMENTS if not name.startswith("demo_")}
    assert demos == full - OFFLINE_EXPERIMENTS


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        [
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.gpus_per_node=2",
        ],
        [
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.address=auto",
            "+hydra.launcher.ray.remote.num_gpus=1",
        ],
    ],
)
def test_the_parallel_and_cluster_launchers_compose(
    launcher: list[str], compose: Callable[..., DictConfig], cluster_extra: None
) -> None:
    config = compose(["experiment=demo_anorefiner", *launcher], return_hydra_config=True)
    assert config.hydra.launcher._target_.startswith("hydra_plugins.")


#: hydra-ray-launcher pins cloudpickle<3, joblib needs >= 3; Ray runs with 3 (the test below).
CLOUDPICKLE_FOR_JOBLIB = "cloudpickle>=3"


@pytest.fixture(scope="session")
def cluster_extra() -> None:
    """The ``cluster`` extra of pyproject.toml (submitit and Ray launchers), installed when missing."""
    try:
        import hydra_plugins.hydra_ray_launcher
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        pip = [sys.executable, "-m", "pip", "install", "--quiet"]
        for requirements in (extra["cluster"], [CLOUDPICKLE_FOR_JOBLIB]):  # README: the cluster extra
            done = subprocess.run([*pip, *requirements], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
        importlib.invalidate_caches()
    # Hydra scans its plugins once per process: a launcher installed after that scan registers its
    # configs (hydra/launcher=ray|submitit_*) only when its config module is imported.
    importlib.import_module("hydra_plugins.hydra_ray_launcher._config")
    importlib.import_module("hydra_plugins.hydra_submitit_launcher.config")


#: A two-job ARD + PGT sweep small enough for a launcher test (nested schemas reach the workers).
TINY_PGT_SWEEP = [*SWEEP[:6], "refiner=ard", "curriculum=pgt", "curriculum.group_size=26",
                  "curriculum.steps_per_group=1", "curriculum.synthetic_per_group=2", "seed=0,1"]  # fmt: skip
PARALLEL_LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(PARALLEL_LAUNCHERS))
def test_a_two_job_sweep_runs_on_a_parallel_launcher(
    launcher: str, demo_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if launcher == "ray":
        request.getfixturevalue("cluster_extra")  # a local Ray instance, started by the launcher
    sweep_dir = tmp_path / launcher
    command = [sys.executable, str(REPO / "train.py"), "-m", *PARALLEL_LAUNCHERS[launcher],
               f"hydra.sweep.dir={sweep_dir}", f"dataset.root={demo_root}", *TINY_PGT_SWEEP]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    if launcher == "ray":
        assert "Started a local Ray instance" in done.stderr + done.stdout
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    assert sorted(r["config"]["seed"] for r in results) == [0, 1]
    assert all(r["refiner"] == "ard" for r in results)
    assert (sweep_dir / "LEADERBOARD.md").is_file()


DDP_ON_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def test_under_ddp_only_training_trainers_span_the_processes(compose: Callable[..., DictConfig]) -> None:
    make_trainer = trainer_factory(compose(DDP_ON_CPU).trainer, logger=False)
    tester, trainer = make_trainer(), make_trainer(purpose="fit", max_steps=1)
    assert isinstance(tester.strategy, SingleDeviceStrategy) and tester.num_devices == 1
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2


def test_ddp_in_a_multirun_needs_processes_started_by_the_cluster(
    compose: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOCAL_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    config = compose(DDP_ON_CPU)
    check_ddp_launch(config.trainer, RunMode.RUN)  # Lightning starts the other ranks by re-running train.py
    check_ddp_launch(compose([]).trainer, RunMode.MULTIRUN)
    with pytest.raises(AnorefineError, match="tasks_per_node"):
        check_ddp_launch(config.trainer, RunMode.MULTIRUN)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # one SLURM task per GPU (submitit, tasks_per_node=2)
    monkeypatch.setenv("SLURM_JOB_NAME", "anorefine")
    check_ddp_launch(config.trainer, RunMode.MULTIRUN)
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("LOCAL_RANK", "0")  # started by torchrun
    check_ddp_launch(config.trainer, RunMode.MULTIRUN)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_together_and_writes_once(demo_root: Path, tmp_path: Path) -> None:
    """PGT trains across two gloo processes; each tests on its own; rank zero alone writes files."""
    tiny = [
        f"dataset.root={demo_root}", "dataset.categories=[brick]", "model.image_size=64",
        "model.coreset_ratio=0.05", "logger=none", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    pgt = [
        "refiner=ard", "curriculum=pgt", "refiner.width=16", "curriculum.steps_per_group=3",
        "curriculum.synthetic_per_group=4", "curriculum.batch_size=4", "curriculum.crop_size=32",
    ]  # fmt: skip
    ddp = run_train([*tiny, *pgt, *DDP_ON_CPU], tmp_path / "ddp", env={"OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    output = ddp.stdout + ddp.stderr
    assert "MEMBER: 2/2" in output and output.count("results: ") == 1
    assert (tmp_path / "ddp" / "train_ddp_process_1.log").is_file()  # the second process ran the run
    assert not (tmp_path / "ddp" / "failure.json").exists()
    single = run_train(tiny, tmp_path / "single", env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-3000:]
    # every test image scored exactly once: the base map's metrics are those of a one-process run
    base, reference = ddp.results["metrics"]["mean"]["base"], single.results["metrics"]["mean"]["base"]
    assert base == pytest.approx(reference, abs=1e-5)
    groups = read_json(tmp_path / "ddp" / "categories" / "brick.json")["curriculum"]["groups"]
    indices = sorted(i for group in groups for i in group["indices"])
    assert indices == list(range(len(indices)))


def test_the_f2pad_table_is_scored_by_the_official_mvtec_evaluation(
    compose: Callable[..., DictConfig],
) -> None:
    jobs = expected_jobs(compose(["experiment=f2pad"], return_hydra_config=True))
    assert len(jobs) == 6
    for job in jobs:
        config = compose(job["overrides"])
        assert (config.dataset.name, config.eval.protocol, config.eval.resolution) == (
            "mvtec",
            "mvtec",
            "original",
        )
