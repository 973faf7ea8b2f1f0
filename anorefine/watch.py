"""``predict.watch=DIR`` (with ``predict.state=RUN``): score each image as it lands in a folder.

The state (or, with ``predict.engine=onnx``, its export) is loaded once; then the folder is looked at
every ``predict.poll_s`` seconds, recursively (as ``predict.images`` is read), hidden files and
folders and the run folder itself left out. An image file is scored once its size and modification
time are the same at two looks in a row (it has settled: a writer still copying it changes them), in
path order, through the engine's own scoring (``inspection.score_stream`` or
``OnnxScorer.score_stream``) into the same ``FolderWriter`` as ``predict.images``: its map, mask and
overlay, then its row appended to the run's ``scores.csv``. An image that still cannot be read gets
one logged line and is skipped until its size or time changes; other files are ignored. Each path is
scored once. Images present when watching begins are skipped, or scored with
``predict.watch_existing=true``.

Polling, not the ``watchdog`` package: a look costs one listing of the folder, it needs no new
dependency, and it works on network shares, where file-system events often never arrive.

Ctrl-C (SIGINT) and SIGTERM (``docker stop``, systemd) set a flag instead of raising, so the image
being scored is finished (map, mask, overlay and row, or nothing) before the loop ends; a
KeyboardInterrupt inside a Lightning test pass would end the process at once.
``predict.watch_max_images`` and ``predict.watch_timeout_s`` end the loop too (scripts, tests). Each
end prints one summary line.
"""

from __future__ import annotations

import csv
import io
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from anorefine.atomic import write_atomic
from anorefine.data import AnomalyImageDataset
from anorefine.data.records import ImageResize, is_image_file
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError, DataError
from anorefine.export import ExampleImages
from anorefine.inspection import (
    SCORE_COLUMNS,
    SCORES_FILE,
    FolderWriter,
    Thresholds,
    check_torch_engine,
    fitting_config,
    saved_category,
    score_stream,
    state_dir,
    task_from_state,
    unlabeled_record,
    write_scores,
)
from anorefine.nodes import component_class
from anorefine.onnx_engine import OnnxScorer, export_of, first_line
from anorefine.pipeline import Pipeline

log = logging.getLogger(__name__)

#: An image file's (size in bytes, modification time in ns) at one look.
Signature = tuple[int, int]
#: The signals that end a watch after the image being scored, and how the summary names them.
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


@dataclass(frozen=True)
class WatchSettings:
    """The ``predict.watch*`` settings, checked."""

    folder: Path
    poll_s: float
    existing: bool
    max_images: int | None
    timeout_s: float | None

    @classmethod
    def of(cls, cfg: DictConfig) -> WatchSettings:
        """Read and check ``cfg.predict``; a one-line error names the setting and the fix."""
        predict = cfg.predict
        if not predict.state:
            raise AnorefineError(
                f"predict.watch={predict.watch} needs a saved state: add predict.state=RUN (a predict run's "
                "folder; run python predict.py predict.images=DIR once to make one)"
            )
        if predict.images:
            raise AnorefineError(
                f"predict.images={predict.images} and predict.watch={predict.watch} are both set: drop "
                "predict.images (predict.watch_existing=true scores what is already in the folder)"
            )
        folder = Path(predict.watch).expanduser().resolve()
        if not folder.is_dir():
            raise AnorefineError(f"predict.watch={predict.watch} is not a folder: create it or fix the path")
        if not predict.poll_s > 0:
            raise AnorefineError(f"predict.poll_s={predict.poll_s} must be above 0 (seconds between looks)")
        if predict.watch_max_images is not None and predict.watch_max_images < 1:
            raise AnorefineError(
                f"predict.watch_max_images={predict.watch_max_images} must be at least 1 (or null)"
            )
        if predict.watch_timeout_s is not None and not predict.watch_timeout_s > 0:
            raise AnorefineError(
                f"predict.watch_timeout_s={predict.watch_timeout_s} must be above 0 (or null)"
            )
        return cls(
            folder, float(predict.poll_s), bool(predict.watch_existing), predict.watch_max_images,
            None if predict.watch_timeout_s is None else float(predict.watch_timeout_s),
        )  # fmt: skip


@dataclass(frozen=True)
class Engine:
    """What the watcher scores with: the engine's scoring of a stream into a ``FolderWriter``, and the
    thresholds and input of the state or export it loaded."""

    score: Callable[[AnomalyImageDataset, FolderWriter], None]
    thresholds: Thresholds
    image_size: int
    resize: ImageResize
    source: Path  # the state folder, or the .onnx file


def torch_engine(cfg: DictConfig) -> Engine:
    """``predict.state`` rebuilt and loaded as ``predict.state=RUN predict.images=DIR`` loads it."""
    check_torch_engine(cfg)
    cfg = fitting_config(cfg)
    if component_class(cfg.model, Detector).transductive:
        raise AnorefineError(
            f"predict.watch: model={cfg.model.name} scores each image against the other images of a "
            "folder, not one image as it lands: score whole folders with predict.images=DIR"
        )
    saved = state_dir(cfg.predict.state)
    pipeline = Pipeline(cfg)
    pipeline.check([], ("train",), trains=False)
    size = int(cfg.dataset.image_size)
    task, thresholds = task_from_state(pipeline, saved, saved_category(saved), ExampleImages(size))
    trainer = pipeline.trainers()(enable_progress_bar=False)  # a bar per image would flood a terminal
    score = partial(score_stream, task, trainer, batch_size=1)
    return Engine(score, thresholds, size, cfg.dataset.image_resize, saved)


def onnx_engine(cfg: DictConfig) -> Engine:
    """The export ``predict.onnx`` names, or ``predict.state``'s own, in onnxruntime."""
    model, info = export_of(cfg)
    scorer = OnnxScorer.load(model)
    score = partial(scorer.score_stream, batch_size=1)
    return Engine(score, Thresholds(**info.thresholds), info.image_size, info.resize, model)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """``row`` appended to the CSV at ``path`` atomically: the old bytes and the new line go to a
    temporary file renamed onto it, so a reader, Ctrl-C or a crash never leaves half a row (an
    in-place append can); the copy is small beside the three image files each row stands for."""
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=SCORE_COLUMNS).writerow(row)  # predict's dialect (write_scores)
    content = path.read_bytes() + line.getvalue().encode()
    write_atomic(path, lambda temp: Path(temp).write_bytes(content))


def signature(path: Path) -> Signature | None:
    """``path``'s size and modification time, or None when it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


class FolderWatcher:
    """The watched folder's images: waiting to settle, scored, or unreadable as they are."""

    def __init__(self, engine: Engine, settings: WatchSettings, run_dir: Path) -> None:
        self.engine, self.settings, self.run_dir = engine, settings, run_dir.resolve()
        self.csv = self.run_dir / SCORES_FILE
        self.pending: dict[Path, Signature] = {}  # the last look's signature of each image not yet scored
        self.failed: dict[Path, Signature] = {}  # the signature at which an image could not be read
        self.done: set[Path] = set()  # scored, or present at the start and skipped
        self.scored = self.errors = 0
        self.stop = threading.Event()  # set by a stop signal (``stop_on_signals``)
        self.stopped_by = STOP_SIGNALS[signal.SIGINT]  # names the signal that set ``stop``
        self.started = time.monotonic()
        present = self.look()
        if settings.existing:
            self.pending.update(present)  # scored at the first look if they have not changed
        else:
            self.done.update(present)
        self.present_at_start = len(present)
        if not self.csv.is_file():
            write_scores(self.csv, [])  # the header: a reader finds the file from the start

    def look(self) -> dict[Path, Signature]:
        """The signature of every image file below the folder that is not done yet, but hidden files,
        hidden folders and the run folder."""
        found = {}
        for path in self.settings.folder.rglob("*"):
            if path in self.done or self.ignored(path) or not is_image_file(path):
                continue
            if (current := signature(path)) is not None:
                found[path] = current
        return found

    def ignored(self, path: Path) -> bool:
        """Hidden (a copy in progress, often) or below the run folder (this watcher's own output)."""
        hidden = any(part.startswith(".") for part in path.relative_to(self.settings.folder).parts)
        return hidden or path.is_relative_to(self.run_dir)

    def poll(self) -> None:
        """One look: score each image whose signature is the last look's, in path order."""
        present = self.look()
        for path in sorted(present):
            if self.finished():
                break
            if self.failed.get(path) == present[path]:
                continue  # unreadable as it is: tried again once it changes
            if self.pending.get(path) != present[path]:  # new, or still being written
                self.pending[path] = present[path]
                continue
            self.score(path, present[path])
        self.pending = {
            path: sig for path, sig in self.pending.items() if path in present and path not in self.done
        }
        self.failed = {path: sig for path, sig in self.failed.items() if path in present}

    def score(self, path: Path, settled: Signature) -> None:
        """Score one settled image into its files and a row of scores.csv, or log one line when it
        cannot be read (nothing of it is left in the run folder then)."""
        record = unlabeled_record(path, self.settings.folder)
        stream = AnomalyImageDataset([record], self.engine.image_size, self.engine.resize)
        writer = FolderWriter(stream.records, self.settings.folder, self.run_dir, self.engine.thresholds)
        name = path.relative_to(self.settings.folder)
        try:
            self.engine.score(stream, writer)
        except DataError as error:
            for file in writer.files(record).values():  # the overlay reads it again after the map and mask
                file.unlink(missing_ok=True)
            if (now := signature(path)) != settled:  # written to while it was read: it settles again
                if now is not None:
                    self.pending[path] = now
                return
            log.error("skipped %s until it changes: %s", name, first_line(error, width=300))
            self.failed[path] = settled
            self.errors += 1
            return
        row = writer.rows[0]
        append_row(self.csv, row)
        self.done.add(path)
        self.scored += 1
        flag = ", anomalous" if row["anomalous"] else ""
        log.info("scored %s: %.4g%s (mask %.2f%%)", name, row["score"], flag, 100 * row["mask_share"])

    def finished(self) -> str | None:
        """Why the watch ends now (a stop signal, ``watch_max_images``, ``watch_timeout_s``), or None."""
        settings = self.settings
        if self.stop.is_set():
            return self.stopped_by
        if settings.max_images is not None and self.scored >= settings.max_images:
            return f"predict.watch_max_images={settings.max_images}"
        if settings.timeout_s is not None and time.monotonic() - self.started >= settings.timeout_s:
            return f"predict.watch_timeout_s={settings.timeout_s:g}"
        return None

    def request_stop(self, reason: str) -> None:
        """End the watch after the image being scored (called by a signal handler)."""
        self.stopped_by = reason
        self.stop.set()

    def run(self) -> str:
        """Look every ``poll_s`` seconds until ``finished``; returns why it ended."""
        while (reason := self.finished()) is None:
            self.poll()
            if self.finished() is None:
                self.stop.wait(self.pause())
        return reason

    def pause(self) -> float:
        """Seconds to the next look: ``poll_s``, or less when the timeout comes first."""
        if self.settings.timeout_s is None:
            return self.settings.poll_s
        left = self.settings.timeout_s - (time.monotonic() - self.started)
        return max(0.0, min(self.settings.poll_s, left))

    def summary(self, reason: str) -> str:
        """The line printed at the end."""
        return (
            f"watch of {self.settings.folder} ended ({reason}): {self.scored} images scored, "
            f"{self.errors} unreadable; rows in {self.csv}"
        )


@contextmanager
def stop_on_signals(watcher: FolderWatcher) -> Iterator[None]:
    """Inside the block each of ``STOP_SIGNALS`` asks ``watcher`` to stop instead of raising or killing
    the process; Python delivers signals to the main thread only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(
            number, lambda signum, frame: watcher.request_stop(STOP_SIGNALS[signal.Signals(signum)])
        )
        for number in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def watch_folder(cfg: DictConfig, run_dir: Path) -> bool:
    """Watch ``predict.watch`` until Ctrl-C, SIGTERM or a ``predict.watch_*`` limit, printing a summary
    line; returns True when a signal ended it."""
    settings = WatchSettings.of(cfg)
    engine = (onnx_engine if cfg.predict.engine == "onnx" else torch_engine)(cfg)
    watcher = FolderWatcher(engine, settings, run_dir)
    existing = "scored" if settings.existing else "skipped"
    log.info(
        "watching %s every %g s with %s (%d images already there: %s); Ctrl-C stops",
        settings.folder, settings.poll_s, engine.source, watcher.present_at_start, existing,
    )  # fmt: skip
    with stop_on_signals(watcher):
        reason = watcher.run()
    print(watcher.summary(reason), flush=True)
    return watcher.stop.is_set()
