"""The transfer matrix table (docs/transfer.md) from the run folders of ``experiment=transfer``.

Each run tests one held-out defect kind (``dataset.defect_types``) on every texture of the transfer
dataset with one refiner; every run carries its own base map's metrics, so each row compares the
refined map with the same detector's base map on the same images. Means are unweighted over
textures. Textures of ``DEV_TEXTURES`` are those defaults were chosen on; the others never were.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anorefine.data.textures import PHOTO_TEXTURES

#: Textures on which refiner defaults were compared and chosen (docs/transfer.md); the rest are held out.
DEV_TEXTURES: tuple[str, ...] = PHOTO_TEXTURES
METRICS = ("pixel_ap", "pixel_auroc")
REFINER_LABELS = {"ard": "ARD+PGT", "ard_paper": "paper ARD+PGT", "f2pad": "F2PAD"}


@dataclass(frozen=True)
class Cell:
    """One (held-out kind, refiner, texture): base and refined pixel AP / AUROC in percent."""

    kind: str
    refiner: str
    texture: str
    base: dict[str, float]
    refined: dict[str, float]


def read_cells(sweep_dir: Path) -> tuple[list[Cell], set[str]]:
    """Every cell of the runs under ``sweep_dir``, and the git commits they were made with."""
    cells, commits = [], set()
    for path in sorted(sweep_dir.rglob("results.json")):
        results = json.loads(path.read_text())
        kinds = results["config"]["dataset"].get("defect_types") or []
        if len(kinds) != 1:
            continue  # not a leave-one-kind-out job
        commits.add(str(results.get("git_commit")))
        for texture, stages in results["metrics"].items():
            if texture == "mean":
                continue
            values = {s: {m: 100 * stages[s][m] for m in METRICS} for s in ("base", "refined")}
            cells.append(Cell(kinds[0], results["refiner"], texture, values["base"], values["refined"]))
    return cells, commits


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summary_rows(cells: list[Cell], textures: set[str] | None = None) -> list[list[str]]:
    """Per held-out kind: base, then each refiner's refined value (Δ) for pixel AP and AUROC, and
    the refiner's worst per-texture Δ pixel AUROC; a last row averages the kinds."""
    chosen = [c for c in cells if textures is None or c.texture in textures]
    refiners = sorted({c.refiner for c in chosen})
    by_kind: dict[str, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for cell in chosen:
        by_kind[cell.kind][cell.refiner].append(cell)
    rows, totals = [], defaultdict(list)
    for kind, per_refiner in by_kind.items():
        any_cells = next(iter(per_refiner.values()))
        row = [kind, f"{len(any_cells)}"]
        for metric in METRICS:
            base = _mean([c.base[metric] for c in any_cells])
            row.append(f"{base:.2f}")
            totals[(metric, "base")].append(base)
            for refiner in refiners:
                group = per_refiner.get(refiner, [])
                if not group:
                    row.append("–")
                    continue
                refined = _mean([c.refined[metric] for c in group])
                delta = refined - _mean([c.base[metric] for c in group])
                row.append(f"{refined:.2f} ({delta:+.2f})")
                totals[(metric, refiner)].append(delta)
        for refiner in refiners:
            group = per_refiner.get(refiner, [])
            worst = min((c.refined["pixel_auroc"] - c.base["pixel_auroc"] for c in group), default=None)
            row.append("–" if worst is None else f"{worst:+.2f}")
        rows.append(row)
    mean_row = ["**mean of kinds**", ""]
    for metric in METRICS:
        mean_row.append(f"{_mean(totals[(metric, 'base')]):.2f}")
        mean_row += [f"Δ {_mean(totals[(metric, r)]):+.2f}" if totals[(metric, r)] else "–" for r in refiners]
    mean_row += [""] * len(refiners)
    return [*rows, mean_row]


def summary_header(cells: list[Cell]) -> list[str]:
    """Column names matching ``summary_rows``."""
    refiners = [REFINER_LABELS.get(r, r) for r in sorted({c.refiner for c in cells})]
    header = ["held-out kind", "textures"]
    for metric in ("pixel AP", "pixel AUROC"):
        header += [f"{metric} base", *(f"{metric} {r}" for r in refiners)]
    return header + [f"worst Δ AUROC {r}" for r in refiners]


def texture_rows(cells: list[Cell]) -> list[list[str]]:
    """One row per (kind, texture): base → refined pixel AP and AUROC per refiner."""
    refiners = sorted({c.refiner for c in cells})
    index = {(c.kind, c.texture, c.refiner): c for c in cells}
    rows = []
    for kind, texture in sorted({(c.kind, c.texture) for c in cells}):
        row = [kind, texture + ("" if texture in DEV_TEXTURES else " *")]
        for refiner in refiners:
            cell = index.get((kind, texture, refiner))
            if cell is None:
                row += ["–", "–"]
                continue
            for metric in METRICS:
                row.append(f"{cell.base[metric]:.2f} → {cell.refined[metric]:.2f}")
        rows.append(row)
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(cells: list[Cell], context: dict[str, Any]) -> str:
    """The results section of docs/transfer.md: summary over all textures, over the held-out
    textures only, and per texture. ``context``: machine, load, commit, command, wall time."""
    refiners = sorted({c.refiner for c in cells})
    held_out = {c.texture for c in cells} - set(DEV_TEXTURES)
    parts = [
        "Measured by `make transfer` " + ", ".join(f"{key}: {value}" for key, value in context.items()) + ".",
        "",
        "**All textures** (pixel metrics in percent; Δ against the same run's base map):",
        "",
        markdown_table(summary_header(cells), summary_rows(cells)),
        "",
        f"**Held-out textures only** ({', '.join(sorted(held_out))}: never used to choose a default):",
        "",
        markdown_table(summary_header(cells), summary_rows(cells, held_out)),
        "",
        "**Per texture** (* = held-out texture; base → refined):",
        "",
    ]
    header = ["held-out kind", "texture"]
    for refiner in refiners:
        label = REFINER_LABELS.get(refiner, refiner)
        header += [f"{label} pixel AP", f"{label} pixel AUROC"]
    parts.append(markdown_table(header, texture_rows(cells)))
    return "\n".join(parts) + "\n"
