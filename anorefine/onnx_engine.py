"""``predict.engine=onnx``: score a folder with an exported refined detector in onnxruntime.

``anorefine export`` (``anorefine.export``) writes ``model.onnx`` and beside it ``model.json``
(``ExportInfo``): the input it takes (RGB in [0, 1] at ``image_size``, resized as ``resize`` says,
then ``(x - mean) / std``), the thresholds of the predict run, its config hash and the opset. Here
the graph runs on the CPU with torch's thread count (``OMP_NUM_THREADS``); ``score_folder`` reads
the images with the torch engine's dataset and writes the same maps, masks, overlays and
``scores.csv`` through the same ``FolderWriter``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from anorefine.data import AnomalyImageDataset
from anorefine.data.records import ImageResize
from anorefine.errors import AnorefineError
from anorefine.inspection import (
    SCORES_FILE,
    STATE_FILE,
    FolderWriter,
    Thresholds,
    folder_records,
    images_folder,
    report,
    state_dir,
)
from anorefine.progress import ProgressLog
from anorefine.run_folder import config_hash, write_json_atomic

log = logging.getLogger(__name__)

#: Where ``anorefine export RUN_DIR`` writes by default: RUN_DIR/export/model.onnx (and model.json).
EXPORT_DIR, MODEL_FILE = "export", "model.onnx"
#: The graph's input and outputs: images (B,3,S,S) -> refined maps (B,1,S,S), image scores (B,).
INPUT, OUTPUTS = "images", ("map", "score")
#: The layout of ``ExportInfo`` in the JSON (raise it when a field changes meaning).
INFO_FORMAT = 1
#: What an export reads from a predict run's ``state/inspection.json``.
STATE_KEYS = ("category", "config", "thresholds")
#: Graph and PyTorch agree when max |onnx - torch| <= this * max |torch| (per image; the export checks it).
PARITY_RTOL = 1e-4


@dataclass(frozen=True)
class ExportInfo:
    """The JSON beside an exported graph: everything a scorer needs besides the graph itself."""

    model: str  # the .onnx file's name, in the JSON's folder
    image_size: int  # the graph's input is (batch, 3, image_size, image_size)
    resize: ImageResize  # how images reach that size (``dataset.image_resize``; bilinear is antialiased)
    mean: list[float]  # the input is (RGB in [0, 1] - mean) / std; the detector normalises inside the graph
    std: list[float]
    thresholds: dict[str, Any]  # the predict run's (``inspection.Thresholds``)
    category: str
    detector: str
    refiner: str
    config_hash: str  # of the predict run's resolved config (``run_folder.config_hash``)
    opset: int
    format: int = INFO_FORMAT

    def write(self, path: Path) -> None:
        """``path`` (a .json), written atomically."""
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> ExportInfo:
        """The JSON at ``path``; a one-line error when it is missing, unreadable or of another format."""
        try:
            info = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise AnorefineError(
                f"{path} is not the JSON of an export ({error}): run anorefine export RUN_DIR again"
            ) from None
        if info.format != INFO_FORMAT or info.resize not in get_args(ImageResize):
            raise AnorefineError(
                f"{path} has format {info.format} (resize {info.resize!r}), this version reads format "
                f"{INFO_FORMAT}: run anorefine export RUN_DIR again"
            )
        return info


def info_path(model: Path) -> Path:
    """The JSON that goes with an exported graph."""
    return model.with_suffix(".json")


def exported_model(onnx: str | None, state: str | None) -> Path:
    """The .onnx file ``predict.onnx`` names (a file, or a folder holding one), else the default export
    folder of ``predict.state``."""
    if not onnx and not state:
        raise AnorefineError(
            "predict.engine=onnx needs an exported model: set predict.onnx=FILE (from anorefine export "
            "RUN_DIR) or predict.state=RUN_DIR (its export/ folder)"
        )
    path = Path(onnx).expanduser() if onnx else Path(str(state)).expanduser() / EXPORT_DIR
    field = "predict.onnx" if onnx else "predict.state"
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            raise AnorefineError(
                f"{field}={onnx or state}: {path} holds {len(found)} .onnx files: name one with "
                "predict.onnx=FILE (anorefine export RUN_DIR writes RUN_DIR/export/model.onnx)"
            )
        path = found[0]
    if not path.is_file():
        raise AnorefineError(f"{field}={onnx or state}: no {path}: run anorefine export RUN_DIR first")
    return path


def max_relative_difference(maps: np.ndarray, reference: np.ndarray) -> float:
    """max |maps - reference| / max |reference| of each image, the largest over the batch."""
    images = len(reference)
    difference = np.abs(maps - reference).reshape(images, -1).max(1)
    scale = np.abs(reference).reshape(images, -1).max(1)
    return float((difference / np.maximum(scale, np.finfo(np.float32).tiny)).max())


def inference_session(model: Path) -> Any:
    """onnxruntime's CPU session of ``model`` with torch's thread count; onnxruntime's own errors
    (``InvalidProtobuf``, ``Fail``, ...: no common base) on a graph it cannot load."""
    try:
        import onnxruntime
    except ImportError:
        raise AnorefineError(
            "onnxruntime is not installed: pip install -e .[export] (or predict.engine=torch)"
        ) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: not its notes on shape inference
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """An exported graph in onnxruntime: images -> (maps, scores)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    @classmethod
    def load(cls, model: Path) -> OnnxScorer:
        """The scorer of an exported graph; a one-line error when onnxruntime cannot load it."""
        try:
            return cls(inference_session(model))
        except AnorefineError:
            raise
        except Exception as error:  # onnxruntime's own classes
            raise AnorefineError(
                f"onnxruntime cannot load {model} ({first_line(error)}): run anorefine export RUN_DIR again"
            ) from None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,S,S) images in [0, 1] -> refined maps (B,1,S,S) and image scores (B,), float32 on the CPU."""
        feed = {INPUT: images.detach().float().cpu().contiguous().numpy()}
        maps, scores = self.session.run(list(OUTPUTS), feed)
        return torch.from_numpy(maps), torch.from_numpy(scores)

    def score_stream(self, stream: Dataset, writer: FolderWriter, batch_size: int, workers: int = 0,
                     progress: ProgressLog | None = None) -> None:  # fmt: skip
        """The onnx engine's scoring: every batch of ``stream`` through the graph, its maps and image
        scores handed to ``writer``."""
        for batch in DataLoader(stream, batch_size=batch_size, num_workers=workers):
            maps, scores = self(batch["image"])
            writer(batch, maps, maps, scores)
            if progress is not None:
                progress.advance(len(scores))


def first_line(error: BaseException, width: int = 160) -> str:
    """An exception as one short line."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= width else line[: width - 1] + "…"


def read_state(folder: Path) -> dict[str, Any]:
    """A predict run's ``state/inspection.json`` (``folder``: its state/), checked to hold what an export
    and a scorer read."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise AnorefineError(
            f"{path} is not a readable predict state ({first_line(error)}): run the predict run again"
        ) from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise AnorefineError(
            f"{path} has no {missing[0]!r}: it is not a predict state; run the predict run again"
        )
    return state


def check_state(info: ExportInfo, state: str, model: Path) -> None:
    """An export given with ``predict.state`` must come from that state's run (the same config hash)."""
    saved = read_state(state_dir(state))["config"]
    if config_hash(saved) != info.config_hash:
        raise AnorefineError(
            f"predict.onnx={model} was exported from another run (config hash {info.config_hash}, "
            f"predict.state's {config_hash(saved)}): export this state with anorefine export {state}"
        )


def export_of(cfg: DictConfig) -> tuple[Path, ExportInfo]:
    """The .onnx file that ``predict.onnx`` or ``predict.state`` names and its JSON; given both, the
    export must come from that state's run."""
    model = exported_model(cfg.predict.onnx, cfg.predict.state)
    info = ExportInfo.read(info_path(model))
    if cfg.predict.state:
        check_state(info, cfg.predict.state, model)
    return model, info


def score_folder(cfg: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Score ``predict.images`` with the exported graph; returns the rows of scores.csv."""
    images_root = images_folder(cfg)
    model, info = export_of(cfg)
    stream = AnomalyImageDataset(folder_records(images_root), info.image_size, info.resize)
    stream.check_files()
    scorer = OnnxScorer.load(model)
    thresholds = Thresholds(**info.thresholds)
    writer = FolderWriter(stream.records, images_root, run_dir, thresholds)
    progress = ProgressLog(log, f"{info.category}: scoring with onnxruntime", len(stream), "images")
    batch_size, workers = int(cfg.dataset.batch_size), int(cfg.dataset.num_workers)
    scorer.score_stream(stream, writer, batch_size, workers, progress)
    writer.write_csv(run_dir / SCORES_FILE)
    report(writer.rows, thresholds, run_dir, model)
    return writer.rows
