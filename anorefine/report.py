"""``report.html``: a static page of one run folder with its metrics table and figures.

The page references only figures that exist when it is written (relative paths, so the folder can
be moved or served as is). On load, a small script counts the images that decoded and writes the
counts into ``<body data-images-loaded data-images-total>``, and names any image that did not.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from anorefine.leaderboard import COLUMNS, SMOKE_NOTE, Cell
from anorefine.results import CONTAINS_ZERO_MARK, breakdown_table, interval_text, refines, run_method
from anorefine.run_folder import REPORT_FILE
from anorefine.viz import pr_path, samples_path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
.warning { background: #fff3cd; padding: 0.6em; border: 1px solid #e0c060; }
img { max-width: 100%; margin: 0.5em 0.5em 0.5em 0; vertical-align: top; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""
_IMAGE_CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((image) => !(image.complete && image.naturalWidth > 0));
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.length - broken.length;
  broken.forEach((image) => {
    image.insertAdjacentText("afterend", " [not loaded: " + image.getAttribute("src") + "]");
  });
});
"""


#: Where the intervals are explained (in the repository that wrote the report).
DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"


def metrics_table(results: dict[str, Any]) -> str:
    """Rows per category (and mean): the base map, then the refined map with Δ and, where the run
    has one, its bootstrap interval; values in percent."""
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ["category", "map", *COLUMNS.values()])
    rows = []
    intervals = results.get("intervals") or {}
    for category in [*results["categories"], "mean"]:
        stages = results["metrics"][category]
        found = (intervals.get(category) or {}).get("delta", {})
        for stage in ("base", "refined"):
            cells = []
            for key in COLUMNS:
                base, value = stages["base"].get(key), stages[stage].get(key)
                delta = (
                    value - base if stage == "refined" and value is not None and base is not None else None
                )
                text = "–" if value is None else Cell(value, delta=delta).text()
                if delta is not None and found.get(key):
                    text += f" {interval_text(found[key])}"
                cells.append(text)
            row = [category if stage == "base" else "", stage, *cells]
            rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def breakdown_section(results: dict[str, Any], part: str) -> str:
    """The per-kind or per-size table of every category (the console's, with base → refined for
    every metric), or a line saying why there is none."""
    breakdown = results.get("breakdown")
    if breakdown is None:
        return "<p>Not computed (<code>eval.breakdown=false</code>).</p>"
    with_delta = refines(results)
    table = breakdown_table(breakdown, results.get("intervals"), part, with_delta=with_delta)
    if not table:
        missing = "defect kinds" if part == "kinds" else "pixel metrics (masks with GT regions)"
        return f"<p>None: no category has {missing}.</p>"
    header, *rows = table
    names = [" ".join(COLUMNS.get(word, word) for word in cell.split()) for cell in header]  # P-AP Δ
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{part}"><tr>{head}</tr>{body}</table>'


def intervals_note(results: dict[str, Any]) -> str:
    """What the intervals are and what they are not."""
    intervals = results.get("intervals")
    found = next(iter((intervals or {}).values()), None)
    if not found:
        if not refines(results):
            why = f"refiner={results.get('refiner')}: the refined map is the base map, Δ = 0"
        elif results.get("format", 0) < 3:
            why = "results written before intervals existed"
        else:
            why = "eval.bootstrap.replicates=0"
        return f"<p>No bootstrap intervals in this run ({html.escape(why)}).</p>"
    return (
        f"<p>Intervals <code>[low, high]</code> (points of Δ = refined − base): {100 * found['level']:g}% "
        f"paired bootstrap intervals over the test images: {found['replicates']} resamples of each "
        f"category's test images with replacement (seed {found['seed']}, each category its own stream), "
        "both maps scored on the same resample; the mean's interval averages the categories' resampled Δs. "
        f"{CONTAINS_ZERO_MARK} marks an interval that contains 0. They say how much Δ depends on which "
        "test images were drawn. They are <em>not</em> a rerun of training: another seed, another PGT "
        "stream or a re-tuned refiner can move Δ further, which only runs over several seeds show "
        f'(<a href="{html.escape(DOCS.as_uri())}">docs/experiments.md</a>, breakdowns and intervals).</p>'
    )


def figure_section(run_dir: Path, category: str) -> str:
    """The category's figures that exist, as relative ``<img>`` tags."""
    images = [
        f'<img src="{html.escape(path.relative_to(run_dir).as_posix())}" alt="{html.escape(alt)}">'
        for path, alt in (
            (samples_path(run_dir, category), f"{category}: best and worst images"),
            (pr_path(run_dir, category), f"{category}: pixel PR curves"),
        )
        if path.is_file()
    ]
    body = "".join(images) or "<p>No figures (no anomalous test image with a mask).</p>"
    return f"<h3>{html.escape(category)}</h3>{body}"


def evaluation_resolution(results: dict[str, Any]) -> str:
    """How the maps were scored: the model's input size, or each image's original size."""
    resolution = results.get("eval_resolution") or {}
    if resolution.get("mode") == "original":
        return "each image's original size"
    size = resolution.get("size")
    return f"the input size {size[0]}×{size[1]}" if size else "an unrecorded size"


def render_report(results: dict[str, Any], run_dir: Path) -> str:
    """The report page of one run's results."""
    method = run_method(results)
    title = f"{results['dataset']} · {results['model']} · {method}"
    overrides = " ".join(results.get("overrides", [])) or "(none)"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="warning">{html.escape(SMOKE_NOTE)}</p>' if results.get("smoke_only") else "",
        f"<p>Config hash <code>{html.escape(str(results.get('config_hash')))}</code>, "
        f"git commit <code>{html.escape(str(results.get('git_commit')))}</code>, "
        f"evaluated at {html.escape(evaluation_resolution(results))}. "
        f"Overrides: <code>{html.escape(overrides)}</code></p>",
        "<h2>Metrics</h2>",
        "<p>Percent; the refined row carries Δ against the base map in parentheses, then its interval. "
        "PRO-200 is the 200-threshold PRO (<code>pro_compat</code>), AUPRO the MVTec definition.</p>",
        metrics_table(results),
        "<h2>By defect kind</h2>",
        "<p>Per category, the good images plus the images of one kind (test sub-folder); percent, "
        "base → refined, Δ in points.</p>",
        breakdown_section(results, "kinds"),
        "<h2>By defect size</h2>",
        "<p>Per category, the ground-truth regions (8-connected) by their area as a share of the image; "
        "positives are the bin's region pixels, negatives all normal pixels; AUPRO averages PRO over the "
        "bin's regions.</p>",
        breakdown_section(results, "sizes"),
        intervals_note(results),
        "<h2>Figures</h2>",
        "<p>Per category: the best and worst anomalous images by the refined map's per-image pixel AP "
        "(image | ground truth | base map | refined map), and pixel precision-recall curves.</p>",
        *(figure_section(run_dir, category) for category in results["categories"]),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style><script>{_IMAGE_CHECK}</script></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_report(run_dir: Path, results: dict[str, Any]) -> Path:
    """Write ``report.html`` into the run folder."""
    path = run_dir / REPORT_FILE
    path.write_text(render_report(results, run_dir))
    return path
