"""What a run prints: Lightning's per-Trainer banners, anomalib's per-model info lines and known
third-party warnings, silenced at their source unless ``verbose=true`` (or ``python train.py -v``)
asks for them.

A run builds many Trainers (one per PGT group and per category), and each would repeat the
accelerator banner ("GPU available ...") and the same tips; Lightning prints them through its
rank-zero info logger, so raising that logger to WARNING removes exactly those lines and keeps its
warnings. Third-party deprecation warnings that the user cannot act on are listed one by one.
Lightning's progress bars are live displays that vanish when done in a terminal; written to a file
or a pipe each would leave its last frame (a line per stage, group and category), so they are shown
only on a terminal, where the run's log lines (category, stage, ETA) are the record elsewhere.
"""

from __future__ import annotations

import logging
import sys
import warnings

#: Lightning's loggers for per-Trainer information (accelerator banner, tips, seed lines).
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
#: anomalib's info lines (``Initializing <Model> model.`` for every detector built by model=anomalib).
ANOMALIB_INFO_LOGGERS = ("anomalib",)
#: (category, message regex, module regex) of known third-party warnings nothing here can fix.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # Lightning 2.6 tests torch's deprecated LeafSpec class in its own pytree helper.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\..*"),
)


def configure(verbose: bool) -> None:
    """Quiet Lightning's banners and the known warnings, or bring them all back with ``verbose``."""
    for name in (*LIGHTNING_INFO_LOGGERS, *ANOMALIB_INFO_LOGGERS):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def shows_progress_bars(enabled: bool) -> bool:
    """``trainer.enable_progress_bar``, on an interactive terminal only (see the module docstring)."""
    return enabled and sys.stdout.isatty()
