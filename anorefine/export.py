"""``anorefine export RUN_DIR [--out FILE] [--opset N]``: a predict run's refined detector as one ONNX graph.

From the run's ``state/`` the detector and the trained refiner are rebuilt exactly as
``predict.state=RUN_DIR`` rebuilds them (``inspection.fitting_config``, the pipeline's components,
``inspection.load_state``) and wrapped in ``ScoringGraph``: images (B,3,S,S), RGB in [0, 1] at the
run's input size, -> (refined map (B,1,S,S), image score (B,)), the computation of
``AnomalyTask.predict_maps``. torch.onnx's TorchScript exporter traces it (``dynamo=False``: it works
offline and needs no onnxscript) with a dynamic batch axis. Fitted state becomes constants of the
graph: PatchCore's memory bank with anomalib's nearest-neighbour search (matmul distances, then the
min), a CLIP detector's text embeddings, the ARD's weights and stream statistics, the baseline
blur's matrices. Each detector normalises its input inside the graph, so the JSON beside it
(``onnx_engine.ExportInfo``) gives mean 0 and std 1. Before the graph is written, onnxruntime runs it
on seeded random images and it must equal PyTorch within ``onnx_engine.PARITY_RTOL``.

Detectors that score an image against other test images (MuSc) and refiners that optimise each map
at test time (F2PAD) run in PyTorch only; the export refuses them before building anything.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from anomalib.models.image.patchcore import torch_model as patchcore_model
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn
from torch.onnx import register_custom_op_symbolic, symbolic_helper
from torch.utils.data import Dataset

from anorefine.atomic import write_atomic
from anorefine.cli import BAD_INPUT
from anorefine.conf import CONF_DIR
from anorefine.config import register_configs
from anorefine.detectors.base import Detector
from anorefine.errors import AnorefineError
from anorefine.inspection import STATE_DIR, STATE_FILE, fitting_config, load_state, state_dir
from anorefine.nodes import component_class
from anorefine.onnx_engine import (
    EXPORT_DIR,
    INPUT,
    MODEL_FILE,
    OUTPUTS,
    PARITY_RTOL,
    ExportInfo,
    OnnxScorer,
    first_line,
    inference_session,
    info_path,
    max_relative_difference,
    read_state,
)
from anorefine.pipeline import Pipeline
from anorefine.refiners import separable
from anorefine.refiners.base import Refiner
from anorefine.run_folder import config_hash
from anorefine.task import AnomalyTask

#: The default ONNX opset, and the lowest the graphs need (ascending TopK: the nearest neighbours).
DEFAULT_OPSET, MIN_OPSET = 17, 11
#: How many seeded random images check the export (more than one: the batch axis is dynamic).
CHECK_IMAGES = 2
#: Operators torch.onnx has no symbolic for: the antialiased bilinear resize (the ARD's pixel cues) and
#: the median along a dimension (the ARD's residual head re-centres each delta on it).
ANTIALIASED_RESIZE, MEDIAN = "aten::_upsample_bilinear2d_aa", "aten::median"


class ScoringGraph(nn.Module):
    """Images -> (refined map, image score): a test pass of ``AnomalyTask`` without its metrics."""

    def __init__(self, detector: Detector, refiner: Refiner) -> None:
        super().__init__()
        self.task = AnomalyTask(detector, refiner)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, refined, score = self.task.predict_maps(images)
        return refined, self.task.refiner.image_score(refined, score)


class ExampleImages(Dataset):
    """Seeded random images at the input size: they trace and check the export, and the first one
    builds a lazily built refiner (the ARD) before its weights are loaded (``load_state``)."""

    def __init__(self, size: int, count: int = CHECK_IMAGES) -> None:
        self.images = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


def check_exportable(cfg: DictConfig) -> None:
    """Refuse, before anything is built, the components that cannot be one fixed graph."""
    if component_class(cfg.model, Detector).transductive:
        raise AnorefineError(
            f"model={cfg.model.name} scores each image against the other test images: it runs in "
            "PyTorch only (anorefine predict), not as an exported graph"
        )
    if component_class(cfg.refiner, Refiner).optimises_at_test_time:
        raise AnorefineError(
            f"refiner={cfg.refiner.name} optimises each map at test time: it runs in PyTorch only "
            "(anorefine predict), not as an exported graph"
        )


@symbolic_helper.parse_args("v", "is", "b", "none")
def antialiased_resize(
    g: Any, images: Any, output_size: list[int], align_corners: bool, scale_factors: Any
) -> Any:
    """``aten::_upsample_bilinear2d_aa`` in ONNX: the resize's own per-axis weights
    (``separable.antialias_matrix``) as two MatMuls; a resize to the same size is the identity."""
    height, width = symbolic_helper._get_tensor_sizes(images)[-2:]
    if (height, width) == tuple(output_size):
        return images
    rows = separable.antialias_matrix(height, output_size[0], align_corners).float()
    cols = separable.antialias_matrix(width, output_size[1], align_corners).float()
    resized = g.op("MatMul", g.op("Constant", value_t=rows), images)
    return g.op("MatMul", resized, g.op("Constant", value_t=cols.T.contiguous()))


@symbolic_helper.parse_args("v", "i", "i")
def median(g: Any, values: Any, dim: int, keepdim: bool) -> tuple[Any, Any]:
    """``aten::median.dim`` in ONNX: torch's median is the lower one, element h = (n - 1) // 2 of the
    sorted values; TopK keeps the smallest h + 1 in order and Gather takes the last of them (every op
    takes a negative ``dim`` as it is)."""

    def constant(value: int) -> Any:
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.long))

    length = g.op("Gather", g.op("Shape", values), constant(dim), axis_i=0)
    half = symbolic_helper._unsqueeze_helper(
        g, g.op("Div", g.op("Sub", length, constant(1)), constant(2)), [0]
    )
    smallest, indices = g.op(
        "TopK", values, g.op("Add", half, constant(1)), axis_i=dim, largest_i=0, sorted_i=1, outputs=2
    )
    picked = [g.op("Gather", tensor, half, axis_i=dim) for tensor in (smallest, indices)]
    if not keepdim:
        picked = [symbolic_helper._squeeze_helper(g, tensor, [dim]) for tensor in picked]
    return picked[0], picked[1]


@contextmanager
def whole_batch_search() -> Iterator[None]:
    """anomalib splits PatchCore's nearest-neighbour queries into chunks of a size it reads at each
    call; traced, the split would be fixed by the example's size, so the graph searches in one piece."""
    chunk = patchcore_model.DEFAULT_CHUNK_SIZE
    patchcore_model.DEFAULT_CHUNK_SIZE = sys.maxsize
    try:
        yield
    finally:
        patchcore_model.DEFAULT_CHUNK_SIZE = chunk


def export_graph(graph: ScoringGraph, images: torch.Tensor, path: Path, opset: int, label: str) -> float:
    """Trace ``graph`` on the first of ``images`` into ``path`` (atomically, after onnxruntime matched
    PyTorch on all of them); returns the largest relative difference (maps and scores)."""
    register_custom_op_symbolic(ANTIALIASED_RESIZE, antialiased_resize, 9)
    register_custom_op_symbolic(MEDIAN, median, 11)
    graph.eval()
    with torch.no_grad():  # also fills the blur and resize matrix caches, which the trace reads as constants
        expected = [t.float().cpu().numpy() for t in graph(images)]
    difference = 0.0

    def save(temp: str) -> None:
        nonlocal difference
        try:
            with torch.no_grad(), whole_batch_search(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on the sizes and flags it keeps fixed
                torch.onnx.export(
                    graph, (images[:1],), temp, dynamo=False, opset_version=opset, input_names=[INPUT],
                    output_names=list(OUTPUTS), dynamic_axes={key: {0: "batch"} for key in (INPUT, *OUTPUTS)},
                )  # fmt: skip
        except Exception as error:  # torch.onnx's (an operator, an opset) or the traced code's own
            raise AnorefineError(
                f"{label} does not export to ONNX opset {opset} ({first_line(error)}): it runs in "
                "PyTorch only (predict.engine=torch)"
            ) from None
        try:
            maps, scores = OnnxScorer(inference_session(Path(temp)))(images)
        except AnorefineError:
            raise
        except Exception as error:  # onnxruntime's own classes
            raise AnorefineError(
                f"onnxruntime cannot run the exported {label} ({first_line(error)}): it runs in PyTorch "
                "only (predict.engine=torch)"
            ) from None
        difference = max(
            max_relative_difference(maps.numpy(), expected[0]),
            max_relative_difference(scores.numpy(), expected[1]),
        )
        if difference > PARITY_RTOL:
            raise AnorefineError(
                f"the exported {label} differs from PyTorch by {difference:.1e} of the map's maximum "
                f"(limit {PARITY_RTOL:.0e}): it runs in PyTorch only (predict.engine=torch)"
            )

    write_atomic(path, save)
    return difference


def state_config(run_dir: Path) -> DictConfig:
    """The config ``predict.state=run_dir`` would score with (the defaults of ``conf/predict.yaml``,
    the state's model, refiner, dataset and seed)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="predict")
    cfg.predict.state = str(run_dir)
    return fitting_config(cfg)


def export_run(run_dir: Path, out: Path | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Export the refined detector of the predict run ``run_dir``; returns the .onnx file written
    (default ``run_dir/export/model.onnx``), with its ``ExportInfo`` JSON beside it."""
    path = out or run_dir / EXPORT_DIR / MODEL_FILE
    if path.suffix != ".onnx":
        raise AnorefineError(f"--out {path}: name a .onnx file (its JSON is written beside it)")
    if opset < MIN_OPSET:
        raise AnorefineError(
            f"--opset {opset}: the graph needs opset {MIN_OPSET} or later (default {DEFAULT_OPSET})"
        )
    try:
        saved = state_dir(run_dir)
    except AnorefineError:
        raise AnorefineError(
            f"{run_dir} holds no {STATE_DIR}/{STATE_FILE}: give the folder of a finished predict run"
        ) from None
    state = read_state(saved)
    cfg = state_config(run_dir)
    check_exportable(cfg)
    pipeline = Pipeline(cfg)
    pipeline.check([], ("train",), trains=False)
    detector = pipeline.build_detector(state["category"])
    refiner = pipeline.build_refiner(detector)
    examples = ExampleImages(int(cfg.dataset.image_size))
    try:
        thresholds = load_state(saved, detector, refiner, examples, pipeline.device)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise AnorefineError(
            f"{saved} holds a state that does not load ({first_line(error)}): run the predict run again"
        ) from None
    label = f"model={cfg.model.name} refiner={cfg.refiner.name}"
    export_graph(ScoringGraph(detector, refiner), examples.images.to(pipeline.device), path, opset, label)
    ExportInfo(
        model=path.name,
        image_size=int(cfg.dataset.image_size),
        resize=cfg.dataset.image_resize,
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        thresholds=asdict(thresholds),
        category=state["category"],
        detector=str(cfg.model.name),
        refiner=str(cfg.refiner.name),
        config_hash=config_hash(state["config"]),
        opset=opset,
    ).write(info_path(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """``anorefine export RUN_DIR [--out FILE] [--opset N]``; exit status 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="anorefine export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished predict run (the folder holding state/)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the .onnx file (default: RUN_DIR/{EXPORT_DIR}/{MODEL_FILE}); JSON beside it",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="the ONNX opset (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir.expanduser(), args.out, args.opset)
    except AnorefineError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    print(f"wrote {path} and {info_path(path).name}: predict.engine=onnx predict.onnx={path} scores with it")
    return 0
