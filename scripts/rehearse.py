"""``make rehearse``: the paper commands on stand-in data with real-size random-weight models, to measure
their cost on this machine before spending GPU hours on them.

Writes stand-ins of MVTec AD and VisA (one category each) under ``--out``, runs every job of the paper
presets (``experiment=anorefiner``, ``experiment=f2pad``) as its own ``python train.py`` with
``model.weights=random``, that category and small budgets (``anorefine.projection.BUDGETS``), and
writes a Markdown report (``--doc``): per job its status, wall time, peak RSS and stage rates, then each
table's projected cost on this machine. A job whose results.json exists is not run again; a failing
job is recorded and the others go on. ``--quick``: tiny images, the smallest budgets and the tiny
random CLIP (for tests; its numbers measure the pipeline, not the paper's models).

python scripts/rehearse.py [--quick] [--only anorefiner|f2pad] [--jobs N] [--out DIR] [--doc PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from anorefine.config import CONF_DIR, register_configs
from anorefine.data.standin import LAYOUTS, scaled_count, write_standin
from anorefine.datasets import open_dataset
from anorefine.detectors.anomalyclip_training import resolve_aux_dataset
from anorefine.detectors.base import Detector
from anorefine.detectors.musc import MIN_REFERENCE
from anorefine.jobs import run_job
from anorefine.nodes import component_class
from anorefine.projection import (
    ASSUMED_GPU,
    BUDGETS,
    DEVICE_STAGES,
    METRIC_TIMINGS,
    PGT_STAGES,
    Population,
    gemm_flops,
    has_setting,
    project_job,
    prompt_steps,
)
from anorefine.results import cpu_model, git_commit
from anorefine.run_folder import RESULTS_FILE
from anorefine.stages import UNITS
from anorefine.sweep import expected_jobs

PRESETS = ("anorefiner", "f2pad")
#: The stand-in category of each dataset: the fewest test images that MuSc can score (MIN_TEST_IMAGES).
CATEGORIES = {"mvtec": "grid", "visa": "candle"}  # grid: greyscale 1024², 6 test images at 2 %
FRACTION = 0.02  # of every split and defect type (at least one image each), raised by standin_fraction
#: MuSc scores each test image against the others of its category, at least MIN_REFERENCE of them.
MIN_TEST_IMAGES = MIN_REFERENCE + 1
QUICK_SIZE_SCALE = 0.1
QUICK_IMAGE_SIZE = 128
#: --quick: the tiny random CLIP instead of the published ones (the CNNs keep their architectures).
QUICK_MODELS = {
    "winclip": ["model.clip=tiny"],
    "anomalyclip": ["model.clip=tiny"],
    "musc": ["model.backbone=tiny"],
}
#: Every job: random weights, no logger, no progress bar, no shared fit cache.
COMMON = ["model.weights=random", "logger=none", "trainer.enable_progress_bar=false", "paths.fit_cache=null"]
RECORD_FILE = "rehearsal.json"
#: When and where the rehearsal's jobs ran (kept when a later call only re-renders the report).
RUN_FILE = "rehearsal_run.json"
#: A job's projected seconds over the real dataset: (on this machine, on one GPU, estimated).
Projection = tuple[float, float]


@dataclass(frozen=True)
class Job:
    """One job of a preset: its folder key and its Hydra overrides (the preset's own listing)."""

    preset: str
    key: str
    overrides: list[str]

    @property
    def name(self) -> str:
        return f"{self.preset}/{self.key}"


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    """train.yaml composed with ``overrides`` (and the hydra node, for job listings)."""
    register_configs()  # idempotent
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def list_jobs(preset: str) -> list[Job]:
    """The jobs ``python train.py -m experiment=PRESET`` launches (``anorefine.sweep.expected_jobs``)."""
    jobs = expected_jobs(compose_config([f"experiment={preset}"], hydra=True)) or []
    return [Job(preset, job["dir"], list(job["overrides"])) for job in jobs]


def job_overrides(job: Job, cfg: DictConfig, roots: dict[str, Path], quick: bool, run_dir: Path) -> list[str]:
    """The job's own overrides plus the rehearsal's: stand-in data, random weights, small budgets."""
    dataset = cfg.dataset.name
    extra = [*COMMON, f"dataset.root={roots[dataset]}", f"dataset.categories=[{CATEGORIES[dataset]}]"]
    extra += [f"{b.key}={b.quick if quick else b.rehearsal}" for b in BUDGETS if has_setting(cfg, b.key)]
    if has_setting(cfg, "prepare.aux_roots"):
        extra += [f"prepare.aux_roots.{name}={root}" for name, root in roots.items()]
    if quick:
        extra += [f"model.image_size={QUICK_IMAGE_SIZE}", *QUICK_MODELS.get(cfg.model.name, [])]
    # one job of the preset's sweep, run on its own: the sweep's parameters are cleared
    return [
        *job.overrides,
        *extra,
        "hydra.sweeper.params=null",
        f"hydra.run.dir='{run_dir}'",
    ]  # quoted: job keys hold = and ,


def standin_population(kind: str, root: Path, category: str) -> Population:
    """Train and test image counts of a stand-in category."""
    train, test = (len(open_dataset(kind, root).records(category, split)) for split in ("train", "test"))
    return Population(train, test)


def aux_test_images(kind: str, root: Path) -> int:
    """Test images of every category of a dataset folder (what AnomalyCLIP's prompts train on)."""
    dataset = open_dataset(kind, root)
    return sum(len(dataset.records(c, "test")) for c in dataset.list_categories())


def projected_seconds(
    job_cfg: DictConfig, results: dict[str, Any], wall_s: float, roots: dict[str, Path], speedup: float = 1.0
) -> float:
    """The job's projected seconds over its real dataset (``anorefine.projection``); ``speedup``: of
    the device stages (the GPU estimate)."""
    dataset = job_cfg.dataset.name
    measured = standin_population(dataset, roots[dataset], CATEGORIES[dataset])
    steps = None
    if has_setting(job_cfg, "prepare.epochs"):
        aux = resolve_aux_dataset(job_cfg.prepare.aux_dataset, dataset)
        real_aux = sum(Population.of(layout).test for layout in LAYOUTS[aux].values())
        run_cfg = OmegaConf.create(results["config"])
        steps = (prompt_steps(job_cfg, real_aux), prompt_steps(run_cfg, aux_test_images(aux, roots[aux])))
    transductive = component_class(job_cfg.model, Detector).transductive
    layouts = LAYOUTS[dataset].values()
    return project_job(results, wall_s, job_cfg, layouts, measured, transductive, steps, speedup)


def count_test_images(dataset: str, category: str, fraction: float) -> int:
    """Test images of the stand-in category at ``fraction``."""
    layout = LAYOUTS[dataset][category]
    return sum(scaled_count(n, fraction) for n in (layout.test_good, *(n for _, n in layout.defects)))


def standin_fraction(dataset: str, category: str) -> float:
    """``FRACTION``, raised by 0.01 until the stand-in category has ``MIN_TEST_IMAGES`` test images."""
    fraction = FRACTION
    while count_test_images(dataset, category, fraction) < MIN_TEST_IMAGES:
        fraction = round(fraction + 0.01, 2)
    return fraction


def standin_text(dataset: str, category: str) -> str:
    """How the report names a stand-in: dataset, category, fraction and its test images."""
    fraction = standin_fraction(dataset, category)
    images = count_test_images(dataset, category, fraction)
    return f"{dataset} {category} at fraction {fraction} ({images} test images)"


def machine() -> str:
    """CPU model and cores."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def stage_rows(results: dict[str, Any]) -> list[str]:
    """A job's stage table: seconds, count, unit and seconds per unit (each category of the run)."""
    rows = ["| category | stage | seconds | count | unit | s per unit |", "|---|---|---:|---:|---|---:|"]
    if results["config"].get("prepare"):
        rows.append(f"| (run) | prepare | {results['timings']['prepare_s']:.1f} | 1 | run | - |")
    for category, timing in results["timings"]["per_category"].items():
        for name, entry in timing.get("stages", {}).items():
            rate = f"{entry['seconds'] / entry['count']:.3f}" if entry["count"] else "-"
            unit = UNITS.get(name, "")
            rows.append(
                f"| {category} | {name} | {entry['seconds']:.2f} | {entry['count']} | {unit} | {rate} |"
            )
    return rows


def per_unit(stages: dict[str, dict[str, float]], names: tuple[str, ...]) -> str:
    """Seconds per unit of the named stages together (their seconds over the first one's count)."""
    found = [stages[name] for name in names if name in stages]
    if not found or not found[0]["count"]:
        return "-"
    return f"{sum(entry['seconds'] for entry in found) / found[0]['count']:.3f}"


def summary_cells(results: dict[str, Any], record: dict[str, Any]) -> str:
    """One job's cells of the per-stage summary: seconds per image (per group for PGT) and peak RSS."""
    (timing,) = results["timings"]["per_category"].values()
    stages = timing.get("stages", {})
    tested = stages.get("detector_maps", {}).get("count") or 1
    metrics = sum(timing.get(key, 0.0) for key in METRIC_TIMINGS) / tested
    prepare = results["timings"].get("prepare_s", 0.0)
    cells = [
        per_unit(stages, ("read",)),
        f"({prepare:.1f})" if results["config"].get("prepare") else per_unit(stages, ("fit",)),
        per_unit(stages, ("detector_maps", "reference_features", "reference")),
        per_unit(stages, PGT_STAGES),
        per_unit(stages, ("refine",)),
        f"{metrics:.3f}",
        f"{record['peak_rss_mb']:.0f}",
    ]
    return " | ".join(cells)


SUMMARY_HEADER = [
    "| job | read s/img | fit s/img (prepare s) | maps s/img | PGT s/group | refine s/img | metrics s/img "
    "| peak RSS MB |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def write_report(
    doc: Path, jobs: list[Job], records: dict[str, dict[str, Any]], projections: dict[str, Projection],
    header: dict[str, str], run_dirs: dict[str, Path],
) -> None:  # fmt: skip
    """The Markdown report: header, the jobs table, the per-stage summary, each job's stages, the
    projection per table (this machine, and the GPU estimate)."""
    lines = ["# Rehearsal of the paper commands", "", *(f"- {k}: {v}" for k, v in header.items()), ""]
    lines += ["## Jobs", "", "| job | status | wall s | peak RSS MB |", "|---|---|---:|---:|"]
    for job in jobs:
        record = records.get(job.name, {"status": "not run"})
        wall, rss = (f"{record[k]:.0f}" if k in record else "-" for k in ("wall_s", "peak_rss_mb"))
        lines.append(f"| {job.name} | {record['status']} | {wall} | {rss} |")
    lines += [
        "",
        "## Per stage",
        "",
        "Seconds per test image of each stage (maps: the detector's, MuSc's mutual scoring included; fit: "
        "per train image; prepare: AnomalyCLIP's prompt "
        "training, seconds for the run; PGT: its four stages per group), the metrics per test image, "
        "and the job's peak resident memory (the whole process).",
        "",
        *SUMMARY_HEADER,
    ]
    for job in jobs:
        record = records.get(job.name, {})
        if record.get("status") == "done":
            results = json.loads((run_dirs[job.name] / RESULTS_FILE).read_text())
            lines.append(f"| {job.name} | {summary_cells(results, record)} |")
    lines += ["", "## Stages per job", ""]
    for job in jobs:
        record = records.get(job.name, {})
        lines += [f"### {job.name}", "", f"`python train.py {' '.join(job.overrides)}`", ""]
        if record.get("status") == "done":
            lines += stage_rows(json.loads((run_dirs[job.name] / RESULTS_FILE).read_text()))
        elif "error" in record:
            lines += ["Last lines of its output:", "", "```", *record["error"], "```"]
        else:
            lines.append("Not run.")
        lines.append("")
    lines += [
        "## Projection",
        "",
        "Each full table's cost on this machine: per job, the measured stage seconds scaled from the "
        "rehearsed category to every category of the real dataset (anorefine/data/layouts.py), then "
        "summed over the table's jobs: `fixed + prepare × S_real/S_rehearsal + Σ_categories (Σ_stages "
        "seconds × scale + other)`, scale being the ratio of images (train for `fit`, test for the "
        "maps, the square of it for a transductive detector's mutual scoring, `reference`) or, for PGT, of "
        "training rounds times the ratio of the budget setting the stage grows with "
        "(anorefine/projection.py has the details). A lower bound where a cost grows faster than assumed.",
        "",
        "The GPU column is an estimate, not a measurement: the device stages "
        f"({', '.join(sorted(DEVICE_STAGES))} "
        f"and the prepare stage) divided by {ASSUMED_GPU[0]} over this machine's measured float32 "
        "matrix-product rate (in the header); reading, PGT's synthesis, the metrics and the rest keep "
        "their CPU seconds. Small kernels (F2PAD's steps, CFLOW's flows) gain less than matrix products "
        "on a GPU, so it is optimistic there; `make bench-gpu` measures the real rates on a GPU.",
        "",
        "| table | jobs measured | projected hours on this machine | projected hours on one GPU (estimate) |",
        "|---|---:|---:|---:|",
    ]
    for preset in sorted({job.preset for job in jobs}):
        names = [job.name for job in jobs if job.preset == preset]
        done = [name for name in names if name in projections]
        cpu, gpu = (f"{sum(projections[n][i] for n in done) / 3600:.2f}" if done else "-" for i in range(2))
        lines.append(f"| experiment={preset} | {len(done)} of {len(names)} | {cpu} | {gpu} |")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")


def start_record() -> dict[str, Any]:
    """The rehearsal's start: date, commit, load and the matrix-product rate (``RUN_FILE``)."""
    return {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
        "commit": git_commit() or "unknown",
        "load_start": os.getloadavg()[0],
        "gemm_flops": gemm_flops(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny images, smallest budgets, tiny CLIP")
    parser.add_argument("--only", choices=PRESETS, help="rehearse one preset (default: all)")
    parser.add_argument("--jobs", type=int, default=None, help="run at most N jobs (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "rehearsal", help="output folder")
    parser.add_argument(
        "--doc", type=Path, default=None, help="report path (default docs/reproduce_rehearsal.md)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more (or leave it out for every job)")
    doc = args.doc or REPO / "docs" / "reproduce_rehearsal.md"
    run_path = args.out / RUN_FILE
    run = json.loads(run_path.read_text()) if run_path.exists() else start_record()
    scale = QUICK_SIZE_SCALE if args.quick else 1.0
    roots = {
        kind: write_standin(
            kind, args.out / "data" / kind, [category], standin_fraction(kind, category), scale
        )
        for kind, category in CATEGORIES.items()
    }
    jobs = [job for preset in ([args.only] if args.only else PRESETS) for job in list_jobs(preset)]
    jobs = jobs[: args.jobs]
    record_path = args.out / RECORD_FILE
    records: dict[str, dict[str, Any]] = json.loads(record_path.read_text()) if record_path.exists() else {}
    projections: dict[str, Projection] = {}
    run_dirs = {job.name: args.out / "jobs" / job.preset / job.key for job in jobs}
    speedup = ASSUMED_GPU[1] / run["gemm_flops"]
    for number, job in enumerate(jobs, 1):
        cfg = compose_config(job.overrides)
        run_dir = run_dirs[job.name]
        if not (run_dir / RESULTS_FILE).exists():
            print(f"[{number}/{len(jobs)}] {job.name}", flush=True)
            records[job.name] = run_job(
                job_overrides(job, cfg, roots, args.quick, run_dir), run_dir, "rehearse.log"
            )
            record_path.write_text(json.dumps(records, indent=1))
            run["load_end"] = os.getloadavg()[0]
            run_path.write_text(json.dumps(run, indent=1))
        else:
            print(f"[{number}/{len(jobs)}] {job.name}: finished earlier, skipped", flush=True)
        record = records.get(job.name, {})
        if (run_dir / RESULTS_FILE).exists() and "wall_s" in record:
            results = json.loads((run_dir / RESULTS_FILE).read_text())
            wall = record["wall_s"]
            projections[job.name] = (
                projected_seconds(cfg, results, wall, roots),
                projected_seconds(cfg, results, wall, roots, speedup),
            )
    run.setdefault("load_end", os.getloadavg()[0])
    if not run_path.exists():
        run_path.write_text(json.dumps(run, indent=1))
    mode = (
        "quick (tiny images and the tiny random CLIP: measures the pipeline, not the models)"
        if args.quick
        else "full"
    )
    header = {
        "date": f"{run['date']} UTC",
        "commit": f"{run['commit']} (at the start)",
        "machine": f"{machine()}; float32 matrix products at {run['gemm_flops'] / 1e9:.0f} GFLOP/s",
        "load average (1 min)": f"{run['load_start']:.2f} at the start, {run['load_end']:.2f} at the end",
        "mode": mode,
        "stand-ins": ", ".join(standin_text(kind, c) for kind, c in CATEGORIES.items())
        + f", size scale {scale}",
        "budgets": ", ".join(f"{b.key}={b.quick if args.quick else b.rehearsal}" for b in BUDGETS),
    }
    write_report(doc, jobs, records, projections, header, run_dirs)
    failed = [name for name in run_dirs if records.get(name, {}).get("status", "done") != "done"]
    print(f"report: {doc}" + (f"; {len(failed)} job(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
