"""anorefine export and predict.engine=onnx: the ONNX graph equals PyTorch, predict writes the torch
engine's files through onnxruntime, and bad input fails with one line.

Equality of maps: max |onnx - torch| <= 1e-4 * max |torch|, image by image (ONNX_RTOL). Masks: every
pixel equal except where the torch map lies within that tolerance of the mask threshold (float32
kernels of two runtimes may order such a pixel either way); the tests count those pixels.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import compose_with, run_train
from fakes import FakeDetector
from onnx import numpy_helper
from PIL import Image

from anorefine import map_files
from anorefine.data import AnomalyImageDataset
from anorefine.errors import AnorefineError
from anorefine.export import ScoringGraph, export_graph, main
from anorefine.inspection import folder_records, run_inspection
from anorefine.nodes import resolved
from anorefine.onnx_engine import ExportInfo, OnnxScorer, check_state, exported_model
from anorefine.refiners.ard import ArdRefiner
from anorefine.run_folder import config_hash

ONNX_RTOL = 1e-4


def rows_of(run_dir: Path) -> dict[str, dict[str, str]]:
    with (run_dir / "scores.csv").open() as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def relative(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def mask_flips(ours: np.ndarray, reference_map: np.ndarray, reference_mask: np.ndarray, t: float) -> int:
    """Mask pixels that differ; fails if one lies outside the tolerance band around the threshold."""
    differ = ours != reference_mask
    band = np.abs(reference_map - t) <= ONNX_RTOL * np.abs(reference_map).max()
    assert not (differ & ~band).any(), "a mask pixel away from the threshold differs"
    return int(differ.sum())


def export_with_cli(run_dir: Path, *args: str) -> tuple[int, str]:
    """``anorefine export RUN_DIR ARGS`` in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main([str(run_dir), *args])
    return status, err.getvalue()


def torch_and_onnx(graph: ScoringGraph, path: Path, images: torch.Tensor) -> tuple[np.ndarray, ...]:
    """(torch map, torch score, onnx map, onnx score) of ``images``, the onnx ones from a plain session."""
    with torch.no_grad():
        maps, scores = graph(images)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_maps, onnx_scores = session.run(None, {"images": images.numpy()})
    return maps.numpy(), scores.numpy(), onnx_maps, onnx_scores


@pytest.fixture(scope="module")
def exported(predicted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared predict run (PatchCore + ARD trained by PGT) exported outside its folder."""
    path = tmp_path_factory.mktemp("export") / "brick.onnx"
    status, err = export_with_cli(predicted.run_dir, "--out", str(path))
    assert status == 0, err
    return path


@pytest.mark.slow
def test_the_graph_takes_any_batch_and_holds_the_fit_as_constants(exported: Path, predicted) -> None:
    state = json.loads((predicted.run_dir / "state" / "inspection.json").read_text())
    info = json.loads(exported.with_suffix(".json").read_text())
    assert info["model"] == "brick.onnx" and info["image_size"] == 128 and info["resize"] == "bilinear"
    assert info["thresholds"] == state["thresholds"] and info["opset"] == 17
    assert info["config_hash"] == config_hash(state["config"])
    assert info["mean"] == [0.0, 0.0, 0.0] and info["std"] == [1.0, 1.0, 1.0]
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    [image_input] = model.graph.input  # the only input: everything fitted is inside
    dims = [d.dim_param or d.dim_value for d in image_input.type.tensor_type.shape.dim]
    assert image_input.name == "images" and dims == ["batch", 3, 128, 128]
    assert [o.name for o in model.graph.output] == ["map", "score"]
    bank = torch.load(predicted.run_dir / "state" / "detector.pt", weights_only=True)["model.memory_bank"]
    constants = [numpy_helper.to_array(t) for t in model.graph.initializer]
    constants += [
        numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
    ]
    assert any(np.array_equal(c, bank.numpy()) or np.array_equal(c, bank.numpy().T) for c in constants)


@pytest.mark.slow
def test_onnxruntime_on_the_test_images_equals_the_torch_runs_maps(
    exported: Path, predicted, demo_root
) -> None:
    folder = demo_root / "brick" / "test"
    stream = AnomalyImageDataset(folder_records(folder), 128)
    images = torch.stack([stream[i]["image"] for i in range(len(stream))])
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    maps, scores = session.run(None, {"images": images.numpy()})  # all 52 in one batch (traced with 1)
    threshold = json.loads(exported.with_suffix(".json").read_text())["thresholds"]["pixel"]
    reference = rows_of(predicted.run_dir)
    worst, flips = 0.0, 0
    for index, record in enumerate(stream.records):
        row = reference[str(record.image_path.relative_to(folder))]
        torch_map = map_files.read_map(predicted.run_dir / row["map"])
        ours = map_files.at_size(torch.from_numpy(maps[index]), torch_map.shape)
        worst = max(worst, relative(ours, torch_map))
        assert abs(scores[index] - float(row["score"])) <= ONNX_RTOL * abs(float(row["score"]))
        torch_mask = np.asarray(Image.open(predicted.run_dir / row["mask"])) > 0
        flips += mask_flips(ours > threshold, torch_map, torch_mask, threshold)
    print(f"largest relative map difference {worst:.1e}; mask pixels flipped at the threshold: {flips}")
    assert worst <= ONNX_RTOL


@pytest.mark.slow
def test_predict_with_the_onnx_engine_writes_the_torch_engines_files(predicted, demo_root, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(predicted.run_dir / "state", run / "state")
    status, err = export_with_cli(run)  # the default place: run/export/model.onnx, found by predict.state
    assert status == 0, err
    args = [f"predict.state={run}", "predict.engine=onnx", f"predict.images={demo_root}/brick/test",
            "trainer.enable_progress_bar=false", "logger=none"]  # fmt: skip
    scored = run_train(args, tmp_path / "onnx", entry="predict.py")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "onnxruntime" in scored.stdout + scored.stderr and "fitting" not in scored.stdout + scored.stderr
    threshold = json.loads((run / "export" / "model.json").read_text())["thresholds"]
    torch_rows, onnx_rows = rows_of(predicted.run_dir), rows_of(scored.run_dir)
    assert list(onnx_rows) == list(torch_rows)
    flips = 0
    for image, row in onnx_rows.items():
        reference = torch_rows[image]
        assert [row[k] for k in ("map", "mask", "overlay")] == [
            reference[k] for k in ("map", "mask", "overlay")
        ]
        score, torch_score = float(row["score"]), float(reference["score"])
        assert abs(score - torch_score) <= ONNX_RTOL * abs(torch_score)
        if abs(torch_score - threshold["image"]) > ONNX_RTOL * abs(torch_score):
            assert row["anomalous"] == reference["anomalous"]
        torch_map = map_files.read_map(predicted.run_dir / row["map"])
        assert relative(map_files.read_map(scored.run_dir / row["map"]), torch_map) <= ONNX_RTOL
        masks = [
            np.asarray(Image.open(folder / row["mask"])) > 0 for folder in (scored.run_dir, predicted.run_dir)
        ]
        flips += mask_flips(masks[0], torch_map, masks[1], threshold["pixel"])
        assert (scored.run_dir / row["overlay"]).is_file()
    print(f"mask pixels flipped at the threshold: {flips}")


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["detector.pt", "refiner.pt"])
def test_a_corrupt_state_file_fails_in_one_line(predicted, tmp_path: Path, broken: str) -> None:
    shutil.copytree(predicted.run_dir / "state", tmp_path / "state")
    weights = tmp_path / "state" / broken
    weights.write_bytes(weights.read_bytes()[:100])
    status, err = export_with_cli(tmp_path)
    assert status == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'state'} holds a state that does not load" in err
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opset", "9"], "--opset 9: the graph needs opset 11 or later"),
        (["--out", "m.txt"], "name a .onnx file"),
    ],
)
def test_bad_export_arguments_fail_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    status, err = export_with_cli(tmp_path, *args)
    assert status == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "holds no state/inspection.json: give the folder of a finished predict run"),
        ("{not json", "is not a readable predict state"),
        ('{"category": "brick"}', "has no 'config'"),
    ],
)
def test_a_missing_or_broken_state_fails_in_one_line(tmp_path: Path, write: str | None, message: str) -> None:
    if write is not None:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "inspection.json").write_text(write)
    status, err = export_with_cli(tmp_path)
    assert status == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=musc"], "model=musc scores each image against the other test images"),
        (["refiner=f2pad"], "refiner=f2pad optimises each map at test time"),
    ],
)
def test_musc_and_f2pad_run_in_pytorch_only(tmp_path: Path, overrides: list[str], message: str) -> None:
    config = resolved(compose_with(overrides, "predict"))
    state = {"category": "brick", "config": config, "thresholds": {}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "inspection.json").write_text(json.dumps(state))
    status, err = export_with_cli(tmp_path)
    assert status == 2 and err.count("\n") == 1
    assert message in err and "it runs in PyTorch only" in err
    assert not (tmp_path / "export").exists()


def started_ard(detector: torch.nn.Module, size: int, **settings: object) -> ArdRefiner:
    """An ARD as after PGT: built, calibrated on the detector's maps, decoder weights drawn at random
    (a fresh residual head is zero; this one must not be)."""
    images = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    ard = ArdRefiner(**settings)  # type: ignore[arg-type]
    with torch.no_grad():
        output = detector(images)
        ard.build(output, (size, size))
        ard.calibrate(output.anomaly_map, output.features)
        generator = torch.Generator().manual_seed(4)
        for weight in ard.parameters():
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
    ard.start_training()
    return ard


@pytest.mark.parametrize(
    "settings",
    [{}, {"support_gain": None}, {"support_gain": None, "residual": False, "rgb_skip": False}],
    ids=["support head", "residual head (median)", "paper head"],
)
def test_every_ard_head_exports_equal_to_pytorch_for_any_batch(tmp_path: Path, settings: dict) -> None:
    detector = FakeDetector(stride=8).eval()
    graph = ScoringGraph(detector, started_ard(detector, 64, **settings))
    path = tmp_path / "ard.onnx"
    export_graph(graph, torch.rand(2, 3, 64, 64), path, 17, "FakeDetector + ARD")
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    maps, scores, onnx_maps, onnx_scores = torch_and_onnx(graph, path, images)
    assert onnx_maps.shape == (5, 1, 64, 64) and onnx_scores.shape == (5,)
    for ours, reference in zip(onnx_maps, maps, strict=True):
        assert relative(ours, reference) <= ONNX_RTOL
    assert np.abs(onnx_scores - scores).max() <= ONNX_RTOL * np.abs(scores).max()


@pytest.mark.parametrize("name", ["winclip", "anomalyclip"])
def test_the_clip_detectors_export_with_their_prompts_inside(tmp_path: Path, name: str) -> None:
    if name == "winclip":
        from anorefine.detectors.winclip import WinClipDetector

        size, detector = 96, WinClipDetector(clip="tiny", image_size=96, class_name="brick")
    else:
        from anorefine.detectors.anomalyclip import AnomalyClipDetector

        size, detector = 70, AnomalyClipDetector(clip="tiny", image_size=70)
    detector.setup_category("brick")
    graph = ScoringGraph(detector.eval(), started_ard(detector, size))
    path = tmp_path / f"{name}.onnx"
    export_graph(graph, torch.rand(2, 3, size, size), path, 17, name)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["images"]  # prompts are constants
    maps, scores, onnx_maps, onnx_scores = torch_and_onnx(graph, path, torch.rand(3, 3, size, size))
    for ours, reference in zip(onnx_maps, maps, strict=True):
        assert relative(ours, reference) <= ONNX_RTOL
    assert np.abs(onnx_scores - scores).max() <= ONNX_RTOL * np.abs(scores).max()


def test_the_novelty_guidance_is_refused_in_one_line(tmp_path: Path) -> None:
    from anorefine.refiners.novelty import NoveltyGuidance

    detector = FakeDetector(stride=8).eval()
    graph = ScoringGraph(detector, started_ard(detector, 64, guidance=NoveltyGuidance(pretrained=False)))
    with pytest.raises(AnorefineError, match=r"does not export to ONNX opset 17 .*runs in PyTorch only"):
        export_graph(graph, torch.rand(2, 3, 64, 64), tmp_path / "novelty.onnx", 17, "the novelty ARD")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_the_engine_names_what_it_misses(tmp_path: Path) -> None:
    with pytest.raises(AnorefineError, match=r"predict.engine=onnx needs an exported model"):
        exported_model(None, None)
    with pytest.raises(AnorefineError, match=r"holds 0 .onnx files"):
        exported_model(str(tmp_path), None)
    with pytest.raises(AnorefineError, match=r"predict.state=.*: no .*export: run anorefine export"):
        exported_model(None, str(tmp_path / "run"))
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    assert exported_model(str(tmp_path), None) == tmp_path / "model.onnx"
    with pytest.raises(AnorefineError, match=r"onnxruntime cannot load .*model.onnx .*export"):
        OnnxScorer.load(tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text('{"model": "model.onnx"}')
    with pytest.raises(AnorefineError, match=r"is not the JSON of an export"):
        ExportInfo.read(tmp_path / "model.json")


def test_an_export_of_another_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "inspection.json").write_text(
        json.dumps({"category": "brick", "config": {"seed": 1}, "thresholds": {}})
    )
    info = ExportInfo("m.onnx", 64, "bilinear", [0.0] * 3, [1.0] * 3, {}, "brick", "patchcore", "ard",
                      config_hash({"seed": 2}), 17)  # fmt: skip
    with pytest.raises(AnorefineError, match=r"was exported from another run"):
        check_state(info, str(tmp_path), tmp_path / "m.onnx")
    check_state(replace(info, config_hash=config_hash({"seed": 1})), str(tmp_path), tmp_path / "m.onnx")


def test_predict_onnx_needs_the_onnx_engine_and_the_engine_is_a_closed_choice(tmp_path: Path) -> None:
    cfg = compose_with([f"predict.images={tmp_path}", "predict.onnx=model.onnx"], "predict")
    with pytest.raises(AnorefineError, match=r"predict.onnx=model.onnx is set: add predict.engine=onnx"):
        run_inspection(cfg, tmp_path)
    assert compose_with([], "predict").predict.engine == "torch"
    with pytest.raises(Exception, match=r"predict.engine"):
        compose_with(["predict.engine=tensorrt"], "predict")
