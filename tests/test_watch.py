"""predict.watch=DIR: images landing in a folder are scored once settled, into predict's files and rows.

The rules (settling, half-written and broken files, what is ignored, the CSV) are driven look by look
with a stand-in engine; the engines themselves run the real loop in a thread on the session's predict
state (torch, and its ONNX export), and a subprocess watcher is stopped with SIGINT and with SIGTERM.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, compose_with
from PIL import Image
from torch.utils.data import DataLoader

from anorefine import map_files
from anorefine.data import AnomalyImageDataset
from anorefine.errors import AnorefineError
from anorefine.export import export_run
from anorefine.inspection import SCORE_COLUMNS, FolderWriter, Thresholds
from anorefine.nodes import resolved
from anorefine.watch import Engine, FolderWatcher, WatchSettings, torch_engine, watch_folder

#: Maps of two engines (or two batch sizes) agree within this share of the map's maximum.
RTOL = 1e-4


def rows_of(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_png(path: Path, seed: int, size: tuple[int, int] = (20, 24)) -> bytes:
    """A random RGB PNG at ``path``; returns its bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def channel_mean_engine() -> Engine:
    """A stand-in engine: the map is the resized image's channel mean, the score its maximum (the
    image is read and decoded as the real engines read it)."""

    def score(stream: AnomalyImageDataset, writer: FolderWriter) -> None:
        batch = next(iter(DataLoader(stream, batch_size=1)))
        maps = batch["image"].mean(1, keepdim=True)
        writer(batch, maps, maps, maps.flatten(1).amax(1))

    return Engine(score, Thresholds(0.9, 0.5, 0.0, 1), 16, "bilinear", Path("stand-in"))


def watcher_on(
    folder: Path, run_dir: Path, existing: bool = False, engine: Engine | None = None
) -> FolderWatcher:
    settings = WatchSettings(folder.resolve(), 0.1, existing, None, None)
    return FolderWatcher(engine or channel_mean_engine(), settings, run_dir)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_image_is_scored_once_it_has_settled_and_a_half_written_one_once_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, run_dir = tmp_path / "inbox", tmp_path / "run"
    write_png(inbox / "before.png", 0)
    watcher = watcher_on(inbox, run_dir)
    assert rows_of(run_dir / "scores.csv") == [] and watcher.present_at_start == 1
    data = write_png(tmp_path / "source.png", 1)
    (inbox / "half.png").write_bytes(data[: len(data) // 2])
    write_png(inbox / "sub" / "whole.png", 2)
    watcher.poll()  # both seen for the first time: not settled yet
    assert rows_of(run_dir / "scores.csv") == []
    with (inbox / "half.png").open("ab") as out:
        out.write(data[len(data) // 2 :])
    watcher.poll()  # whole.png settled; half.png changed since the last look
    assert [r["image"] for r in rows_of(run_dir / "scores.csv")] == ["sub/whole.png"]
    watcher.poll()
    rows = rows_of(run_dir / "scores.csv")
    assert [r["image"] for r in rows] == ["sub/whole.png", "half.png"]  # in the order scored
    assert errors(caplog) == [] and (watcher.scored, watcher.errors) == (2, 0)
    for row, name in zip(rows, ("sub/whole", "half"), strict=True):
        assert [row[k] for k in ("map", "mask", "overlay")] == [
            f"maps/{name}.tiff",
            f"masks/{name}.png",
            f"overlays/{name}.png",
        ]
        image = np.asarray(Image.open(inbox / row["image"])).astype(np.float32) / 255
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(image).permute(2, 0, 1)[None], size=(16, 16), mode="bilinear", antialias=True
        ).clamp(0, 1)
        expected = map_files.at_size(resized.mean(1)[0:1], image.shape[:2])  # channel mean, back at 20x24
        assert np.allclose(map_files.read_map(run_dir / row["map"]), expected, atol=1e-6)
        assert float(row["score"]) == pytest.approx(float(resized.mean(1).max()), abs=1e-6)
        mask = np.asarray(Image.open(run_dir / row["mask"])) > 0
        assert np.array_equal(mask, map_files.read_map(run_dir / row["map"]) > 0.5)  # the mask threshold
        assert float(row["mask_share"]) == pytest.approx(mask.mean())
    watcher.poll()
    assert len(rows_of(run_dir / "scores.csv")) == 2  # each path once; before.png never
    assert not (run_dir / "maps" / "before.tiff").exists()


def test_a_broken_image_gets_one_line_and_is_retried_only_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, run_dir = tmp_path / "inbox", tmp_path / "run"
    inbox.mkdir()
    watcher = watcher_on(inbox, run_dir)
    (inbox / "broken.png").write_bytes(b"not a png")
    for _ in range(4):
        watcher.poll()
    [line] = errors(caplog)
    assert "broken.png" in line and "\n" not in line
    assert watcher.errors == 1 and rows_of(run_dir / "scores.csv") == []
    assert not any(p.is_file() for p in run_dir.rglob("*") if p.name != "scores.csv")
    (inbox / "broken.png").write_bytes(b"still not a png")  # changed: tried once more
    for _ in range(3):
        watcher.poll()
    assert len(errors(caplog)) == 2 and watcher.errors == 2
    write_png(inbox / "broken.png", 3)  # replaced by a good image: scored
    watcher.poll()
    watcher.poll()
    assert [r["image"] for r in rows_of(run_dir / "scores.csv")] == ["broken.png"]


def test_an_image_still_written_while_read_waits_instead_of_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that paused longer than a look and resumes while the image is read: no error."""
    inbox, run_dir = tmp_path / "inbox", tmp_path / "run"
    inbox.mkdir()
    data = write_png(tmp_path / "source.png", 4)
    stand_in = channel_mean_engine()

    def resumes_while_read(stream: AnomalyImageDataset, writer: FolderWriter) -> None:
        try:
            stand_in.score(stream, writer)
        finally:
            (inbox / "slow.png").write_bytes(data)

    engine = Engine(resumes_while_read, stand_in.thresholds, 16, "bilinear", Path("stand-in"))
    watcher = watcher_on(inbox, run_dir, engine=engine)
    (inbox / "slow.png").write_bytes(data[:100])
    watcher.poll()
    watcher.poll()  # settled at 100 bytes, read, fails; the file changed meanwhile
    assert errors(caplog) == [] and watcher.errors == 0 and rows_of(run_dir / "scores.csv") == []
    watcher.poll()
    assert [r["image"] for r in rows_of(run_dir / "scores.csv")] == ["slow.png"]


def test_other_files_hidden_files_and_the_run_folder_are_ignored_and_existing_images_optional(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    write_png(inbox / "old.png", 5)
    watcher = watcher_on(inbox, inbox / "run", existing=True)  # the run folder inside the watched one
    (inbox / "notes.txt").write_text("a note")
    write_png(inbox / ".partial.png", 6)
    write_png(inbox / ".cache" / "x.png", 7)
    for _ in range(3):
        watcher.poll()
    assert [r["image"] for r in rows_of(inbox / "run" / "scores.csv")] == ["old.png"]
    assert (inbox / "run" / "overlays" / "old.png").is_file()  # an image in the folder, never scored
    assert (watcher.scored, watcher.errors) == (1, 0)


def test_the_watch_ends_at_its_limits(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    for index in range(3):
        write_png(inbox / f"{index}.png", index)
    settings = WatchSettings(inbox.resolve(), 0.05, True, 2, None)
    watcher = FolderWatcher(channel_mean_engine(), settings, tmp_path / "run")
    assert watcher.run() == "predict.watch_max_images=2" and watcher.scored == 2
    settings = WatchSettings(inbox.resolve(), 5.0, False, None, 0.3)
    started = time.monotonic()
    assert (
        FolderWatcher(channel_mean_engine(), settings, tmp_path / "again").run()
        == "predict.watch_timeout_s=0.3"
    )
    assert time.monotonic() - started < 2.0  # the timeout cuts the 5 s pause short


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "needs a saved state: add predict.state=RUN"),
        (["predict.state=RUN", "predict.images=INBOX"], "drop predict.images"),
        (["predict.state=RUN", "predict.watch=/no/such/folder"], "is not a folder"),
        (["predict.state=RUN", "predict.poll_s=0"], "predict.poll_s=0"),
        (["predict.state=RUN", "predict.watch_max_images=0"], "predict.watch_max_images=0"),
        (["predict.state=RUN", "predict.watch_timeout_s=-1"], "predict.watch_timeout_s=-1"),
    ],
)
def test_bad_watch_settings_fail_in_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    overrides = [o.replace("RUN", str(tmp_path)).replace("INBOX", str(tmp_path)) for o in overrides]
    cfg = compose_with([f"predict.watch={tmp_path}", *overrides], "predict")
    with pytest.raises(AnorefineError, match=message.replace("(", r"\(")) as error:
        WatchSettings.of(cfg)
    assert "\n" not in str(error.value)


def test_a_detector_that_needs_the_whole_folder_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    fitted = resolved(compose_with(["model=musc"], "predict"))
    (state / "inspection.json").write_text(json.dumps({"category": "brick", "config": fitted}))
    cfg = compose_with([f"predict.state={state.parent}", f"predict.watch={tmp_path}"], "predict")
    with pytest.raises(AnorefineError, match="model=musc scores each image against the other images"):
        torch_engine(cfg)


@pytest.fixture(scope="module")
def watched_run(predicted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's predict state, copied (its folder stays untouched) and exported beside it."""
    run = tmp_path_factory.mktemp("watched") / "run"
    shutil.copytree(predicted.run_dir / "state", run / "state")
    export_run(run)
    return run


def settle_then_drop(source: Path, target: Path, pause: float) -> None:
    """Write the first half of ``source`` to ``target``, wait ``pause`` s, write the rest."""
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        time.sleep(pause)
        out.write(data[len(data) // 2 :])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_the_watcher_scores_images_landing_while_it_runs_like_predict(
    engine: str, watched_run: Path, predicted, demo_root: Path, tmp_path: Path, caplog, capsys
) -> None:
    caplog.set_level(logging.INFO)
    test_images = demo_root / "brick" / "test"
    inbox, run_dir = tmp_path / "inbox", tmp_path / "watch"
    inbox.mkdir()
    shutil.copy(test_images / "good" / "000.png", inbox / "a.png")  # there before the start
    (inbox / "broken.png").write_bytes(b"\x89PNG not really")
    (inbox / "notes.txt").write_text("ignored")
    cfg = compose_with(
        [f"predict.state={watched_run}", f"predict.engine={engine}", f"predict.watch={inbox}",
         "predict.watch_existing=true", "predict.poll_s=0.2", "predict.watch_max_images=3",
         "predict.watch_timeout_s=120", "trainer.enable_progress_bar=false", "logger=none"],
        "predict",
    )  # fmt: skip
    ended: list[bool] = []
    thread = threading.Thread(target=lambda: ended.append(watch_folder(cfg, run_dir)))
    thread.start()
    deadline = time.monotonic() + 120
    while not any("watching" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    (inbox / "sub").mkdir()
    shutil.copy(test_images / "crack" / "000.png", inbox / "sub" / "b.png")
    settle_then_drop(test_images / "crack" / "001.png", inbox / "c.png", pause=0.02)
    thread.join(timeout=120)
    assert ended == [False]  # ended by watch_max_images, not by Ctrl-C
    sources = {"a.png": "good/000.png", "sub/b.png": "crack/000.png", "c.png": "crack/001.png"}
    with (run_dir / "scores.csv").open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == SCORE_COLUMNS
    with (predicted.run_dir / "scores.csv").open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == SCORE_COLUMNS  # predict's own columns
    rows = {row["image"]: row for row in rows_of(run_dir / "scores.csv")}
    assert sorted(rows) == sorted(sources)
    reference = {row["image"]: row for row in rows_of(predicted.run_dir / "scores.csv")}
    for image, source in sources.items():
        row, expected = rows[image], reference[source]
        assert abs(float(row["score"]) - float(expected["score"])) <= RTOL * abs(float(expected["score"]))
        watched = map_files.read_map(run_dir / row["map"])
        predicted_map = map_files.read_map(predicted.run_dir / expected["map"])
        assert np.abs(watched - predicted_map).max() <= RTOL * np.abs(predicted_map).max()
        size = Image.open(inbox / image).size[::-1]
        assert np.asarray(Image.open(run_dir / row["mask"])).shape == size
        assert np.asarray(Image.open(run_dir / row["overlay"])).shape == (*size, 3)
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith("skipped broken.png") and "\n" not in line
    assert not (run_dir / "maps" / "broken.tiff").exists()
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(predict.watch_max_images=3): 3 images scored, 1 unreadable" in summary
    assert str(run_dir / "scores.csv") in summary


@pytest.mark.slow
@pytest.mark.parametrize(("stop_signal", "named"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_stop_signal_ends_the_watch_with_a_summary_and_whole_rows(
    watched_run: Path, demo_root: Path, tmp_path: Path, stop_signal: signal.Signals, named: str
) -> None:
    inbox, run_dir, out = tmp_path / "inbox", tmp_path / "watch", tmp_path / "stdout.txt"
    inbox.mkdir()
    command = [sys.executable, str(REPO / "predict.py"), f"predict.state={watched_run}",
               f"predict.watch={inbox}", "predict.poll_s=0.1", "predict.watch_timeout_s=300",
               "trainer.enable_progress_bar=false", "logger=none", f"hydra.run.dir={run_dir}"]  # fmt: skip
    with out.open("w") as stdout:
        process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 180
            while "watching" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            test_images = sorted((demo_root / "brick" / "test" / "crack").glob("*.png"))
            shutil.copy(test_images[0], inbox / "first.png")
            while len(rows_of(run_dir / "scores.csv")) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            for index, image in enumerate(test_images[1:6]):  # the signal lands while these are scored
                shutil.copy(image, inbox / f"more{index}.png")
            time.sleep(0.3)
            process.send_signal(stop_signal)
            status = process.wait(timeout=60)
        finally:
            process.kill()
    text = out.read_text()
    assert status == 130, text[-3000:]  # cli.INTERRUPTED, as for any interrupted run
    rows = rows_of(run_dir / "scores.csv")
    print(f"{named} after {len(rows)} of 6 images scored")
    summary = text.strip().splitlines()[-1]
    assert (
        f"ended ({named}): {len(rows)} images scored, 0 unreadable; rows in {run_dir / 'scores.csv'}"
        in summary
    )
    assert (run_dir / "scores.csv").read_bytes().endswith(b"\r\n")
    assert all(None not in row.values() and len(row) == len(SCORE_COLUMNS) for row in rows)
    assert {p.relative_to(run_dir).as_posix() for p in (run_dir / "maps").rglob("*") if p.is_file()} == {
        row["map"] for row in rows
    }  # every image's files with its row, or neither
    assert all((run_dir / row["overlay"]).is_file() and (run_dir / row["mask"]).is_file() for row in rows)
    assert not [
        p for p in run_dir.rglob(".*") if p.is_file() and ".hydra" not in p.parts
    ]  # no temporary files
