"""The high-resolution stand-in run (docs/high_resolution.md): fine defects on 2048² images scored at a
256² resize and tile by tile at native detail, base and refined, with pixel AP, SegF1, time and memory.

python scripts/hires.py [--quick] [--out DIR] [--root DIR]

Each job is one ``anorefine train`` run in a child process (its wall time and peak RSS measured); a job
whose results.json exists is kept, so an interrupted call picks up where it stopped. The table is
rewritten from every finished job.
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

from anorefine.data.hires import ensure_hires_standin
from anorefine.jobs import run_job
from anorefine.results import cpu_model, git_commit, percent
from anorefine.run_folder import RESULTS_FILE

CATEGORY = "carpet"
#: (image side, defect square, tile side, model input side); --quick: a small smoke of the same jobs.
FULL, QUICK = (2048, 256, 256, 256), (512, 64, 128, 128)
#: Every job: PatchCore on the offline ImageNet backbone, SegF1 at mean + 3σ of the validation normals'
#: maps (held out of the fit), bootstrap intervals of the refined - base deltas.
COMMON = [
    "dataset=folder", f"dataset.categories=[{CATEGORY}]", "dataset.batch_size=1", "logger=none",
    "trainer.enable_progress_bar=false", "paths.fit_cache=null", "model.coreset_ratio=0.02",
    "eval.threshold.rule=mean_std", "eval.threshold.source=validation", "eval.threshold.k=3",
    "eval.bootstrap.replicates=200", "eval.breakdown=true",
]  # fmt: skip
REFINERS = {
    "none": ["refiner=none"],
    "ard+pgt": ["refiner=ard", "curriculum=pgt"],
    "f2pad": ["refiner=f2pad"],
}
#: The tiled ARD + PGT job once more with its synthetic anomalies painted on whole 2048² images, the
#: only way before ``curriculum.synthesis_on=tile``: 8 per group, since the default 48 was killed for
#: memory at 20.1 GB RSS on the 24 GB machine (docs/high_resolution.md).
WHOLE_IMAGE_PGT = ("curriculum.synthesis_on=image", "curriculum.synthetic_per_group=8")
DOC = REPO / "docs" / "high_resolution.md"
MARK = "<!-- hires table -->"


@dataclass(frozen=True)
class Job:
    """One run: how the image reaches the detector (``resize`` or ``tiled``) and the refiner."""

    scoring: str
    refiner: str
    extra: tuple[str, ...] = ()  # the job's own overrides, named in its label and key

    @property
    def label(self) -> str:
        return f"{self.refiner} ({', '.join(self.extra)})" if self.extra else self.refiner

    @property
    def key(self) -> str:
        suffix = "".join(f"_{override.split('=')[-1]}" for override in self.extra)
        return f"{self.scoring}_{self.refiner.replace('+', '_')}{suffix}"

    def overrides(self, sizes: tuple[int, int, int, int], root: Path, run_dir: Path) -> list[str]:
        image, _, tile, model = sizes
        scoring = (
            [f"dataset.image_size={model}", "eval.resolution=original"]
            if self.scoring == "resize"
            else [f"dataset.image_size={image}", f"eval.tiling.tile={tile}", "eval.tiling.overlap=32"]
        )
        return [*COMMON, f"dataset.root={root}", f"model.image_size={model}", *scoring,
                *REFINERS[self.refiner], *self.extra, f"hydra.run.dir={run_dir}"]  # fmt: skip


JOBS = [Job(scoring, refiner) for scoring in ("resize", "tiled") for refiner in REFINERS]
JOBS.append(Job("tiled", "ard+pgt", WHOLE_IMAGE_PGT))
JOBS.append(Job("tiled", "ard+pgt", ("curriculum.crop_size=256",)))  # PGT trains on whole windows


def change(base: dict[str, Any], refined: dict[str, Any], key: str) -> str:
    return f"{percent(base.get(key))} → {percent(refined.get(key))}"


HEADER = [
    "| scoring | refiner | pixel AP base → refined (Δ, 95 % interval) | pixel AUROC | SegF1 "
    "| AP of defects <0.1 % | wall s | peak RSS GB | load at start | commit |",
    "|---|---|---|---|---|---|---:|---:|---:|---|",
]


def table(out: Path, records: dict[str, dict[str, Any]]) -> list[str]:
    """One row per finished job: base and refined pixel AP (with the Δ's interval), AUROC, SegF1 and
    the AP of the smallest size bin, then its time, peak memory, load at its start and commit."""
    rows = list(HEADER)
    for job in JOBS:
        path = out / job.key / RESULTS_FILE
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        base, refined = (results["metrics"]["mean"][stage] for stage in ("base", "refined"))
        interval = ((results.get("intervals") or {}).get(CATEGORY) or {}).get("delta", {}).get("pixel_ap")
        spread = f", [{interval['low'] * 100:+.2f}, {interval['high'] * 100:+.2f}]" if interval else ""
        delta = (refined["pixel_ap"] - base["pixel_ap"]) * 100
        small = (results.get("breakdown") or {}).get(CATEGORY, {}).get("sizes", {}).get("small", {})
        record = records.get(job.key, {})
        cells = [
            job.scoring,
            job.label,
            f"{change(base, refined, 'pixel_ap')} ({delta:+.2f}{spread})",
            change(base, refined, "pixel_auroc"),
            change(base, refined, "seg_f1"),
            change(small.get("base", {}), small.get("refined", {}), "pixel_ap"),
            f"{record.get('wall_s', float('nan')):.0f}",
            f"{record.get('peak_rss_mb', float('nan')) / 1024:.2f}",
            f"{record['load_at_start']:.1f}" if "load_at_start" in record else "not recorded",
            str(results.get("git_commit") or "")[:7],
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_doc(out: Path, records: dict[str, dict[str, Any]], header: str) -> None:
    """Replace the generated part of docs/high_resolution.md (after its marker) with the table."""
    text = DOC.read_text() if DOC.is_file() else f"# High resolution\n\n{MARK}\n"
    kept = text.split(MARK)[0]
    DOC.write_text(kept + MARK + "\n\n" + header + "\n\n" + "\n".join(table(out, records)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="512² images, a smoke of the same jobs")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "hires", help="run folders")
    parser.add_argument("--root", type=Path, default=REPO / "data" / "hires", help="the stand-in's folder")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/high_resolution.md")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    root = args.root.with_name(args.root.name + ("_quick" if args.quick else ""))
    ensure_hires_standin(root, size=sizes[0], patch=sizes[1])
    out = args.out / ("quick" if args.quick else "full")
    record_path = out / "jobs.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for number, job in enumerate(JOBS, 1):
        run_dir = out / job.key
        if (run_dir / RESULTS_FILE).is_file():
            continue
        print(f"[{number}/{len(JOBS)}] {job.key}", flush=True)
        records[job.key] = run_job(job.overrides(sizes, root, run_dir), run_dir, cwd=REPO)
        out.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(records, indent=1))
        if records[job.key]["status"] != "done":
            print("\n".join(records[job.key]["error"]), file=sys.stderr)
    header = (
        f"Table written {datetime.now(timezone.utc):%Y-%m-%d} at commit {git_commit()}; every job ran on "
        f"{cpu_model()} ({os.cpu_count()} cores), its commit and the 1-minute load at its start in its row; "
        f"images {sizes[0]}², defects painted in {sizes[1]}² squares, tiles {sizes[2]}², "
        f"model input {sizes[3]}²."
    )
    print("\n".join(table(out, records)))
    if not args.no_doc and not args.quick:
        write_doc(out, records, header)


if __name__ == "__main__":
    main()
