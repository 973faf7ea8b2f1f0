"""``python train.py --help``: the real options of every config group, each with its one-line description.

Hydra's own help lists every group it can see, the internal ones included (``schema/*``, ``common``,
``paper``, preset fragments). This text lists only what a user chooses, described by the first comment
line of each option's YAML file, and is what ``hydra.help.template`` in conf/train.yaml shows.
"""

from __future__ import annotations

from pathlib import Path

from anorefine.conf import CONF_DIR

#: The groups a user picks from, in the order a command line reads.
USER_GROUPS = (
    "dataset", "model", "refiner", "refiner/guidance", "curriculum", "protocol",
    "trainer", "logger", "prepare", "experiment",
)  # fmt: skip
DESCRIPTION_WIDTH = 96


def description(path: Path) -> str:
    """The first comment line of a YAML file (its ``@package`` line skipped), shortened to one line."""
    for line in path.read_text().splitlines():
        text = line.removeprefix("#").strip()
        if line.startswith("#") and text and not text.startswith("@package"):
            return text if len(text) <= DESCRIPTION_WIDTH else text[: DESCRIPTION_WIDTH - 1].rstrip() + "…"
    return ""


def help_text() -> str:
    """Usage, then every user group's options with their descriptions."""
    lines = [
        "python train.py [group=option ...] [key=value ...]   (-m: a sweep; -v: Lightning's own output)",
        "",
        "  python train.py                                   PatchCore on the built-in demo",
        "  python train.py refiner=ard curriculum=pgt        ARD trained on the test stream by PGT",
        "  python train.py -m experiment=demo_anorefiner     a preset sweep (conf/experiment)",
        "  python predict.py predict.images=DIR dataset.categories=[NAME]  score new images",
        "",
    ]
    for group in USER_GROUPS:
        lines.append(f"{group}:")
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            lines.append(f"  {path.stem:<28} {description(path)}")
        lines.append("")
    lines.append("Every setting: python train.py --cfg job   (the composed config; override any key=value)")
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the template with string.Template
