"""``make bench``: speed, peak memory and exactness of the metrics, detectors and refiners.

Rewrites docs/benchmarks.md. Every measurement runs in its own forked child process, one after the
other, on inputs built once by this process: wall time of the call, and peak extra memory = the
child's peak resident memory (VmHWM, reset just before the call) minus its resident memory before
it. Speeds are ratios against the peer measured in the same run. ``--quick``: a fast subset.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from anorefine.metrics.references import aupro_mvtec

if TYPE_CHECKING:  # torch loads in the children only
    from torch.utils.data import DataLoader, Dataset

MB = 1 << 20
#: The last section of docs/benchmarks.md, written by anorefine/bench_gpu.py; ``make bench`` keeps it.
GPU_SECTION = "## GPU"
GPU_PLACEHOLDER = [
    GPU_SECTION,
    "",
    "Not measured yet: no session has had a GPU. On a GPU machine, `make bench-gpu` "
    "(`anorefine bench --gpu`) "
    "writes this section: the rows above on CUDA, AnomalyCLIP in bf16 and a `trainer=gpu` demo run.",
]
GPU_COLUMN = "see the GPU section"
#: The peer of the refiner rows: their detector alone (a refiner's own time is the difference).
REFINED_DETECTOR = "PatchCore Lite0 alone"
#: The peer of the onnxruntime row: the exported graph's own PyTorch modules.
ONNX_PEER = "the same PatchCore + ARD in PyTorch"
RUN_BATCH = 16  # dataset.batch_size of a run: the batch the CNN detectors and refiners see in train.py


@dataclass
class Measurement:
    """One call in a child process; ``error`` instead of numbers when it failed or ran out of time."""

    seconds: float | None = None
    peak_bytes: int | None = None
    value: Any = None
    error: str | None = None
    load: float = 0.0  # 1-minute load average when the call started

    @property
    def wall(self) -> float:
        """The call's seconds (a call that finished; its ``error`` otherwise)."""
        if self.seconds is None:
            raise RuntimeError(f"no time for a call that failed: {self.error}")
        return self.seconds

    @property
    def peak_mb(self) -> float:
        """The call's peak extra memory in MB (a call that finished; its ``error`` otherwise)."""
        if self.peak_bytes is None:
            raise RuntimeError(f"no memory figure for a call that failed: {self.error}")
        return self.peak_bytes / MB


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(fn: Callable[..., Any], args: tuple[Any, ...], conn: Any) -> None:
    try:
        before = _status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        started = time.perf_counter()
        value = fn(*args)
        seconds = time.perf_counter() - started
        conn.send(Measurement(seconds, _status_bytes("VmHWM") - before, value))
    except Exception as error:  # reported in the table, the bench goes on
        conn.send(Measurement(error=f"{type(error).__name__}: {error}"))


def measure(fn: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Measurement:
    """Run ``fn(*args)`` in a forked child; its time, peak extra memory and return value."""
    load = os.getloadavg()[0]
    context = mp.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(fn, args, sender))
    child.start()
    if receiver.poll(timeout):
        result = receiver.recv()
    else:
        child.kill()
        result = Measurement(error=f"stopped after {timeout:.0f} s")
    child.join()
    result.load = load
    return result


def without_gpu_section(text: str) -> str:
    """``text`` up to its GPU section (the last one), trailing blank lines dropped."""
    return text.split(f"\n{GPU_SECTION}\n", 1)[0].rstrip("\n")


def machine() -> str:
    """CPU model, cores, memory and software versions."""
    import torch

    from anorefine.results import cpu_model

    model = cpu_model()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, GPU: {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}"
    )


def import_libraries() -> None:
    """Import everything the measured calls use, so no child pays (in time or memory) for an import."""
    import anomalib.metrics.aupro  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torchmetrics.classification  # noqa: F401

    import anorefine.metrics  # noqa: F401

    if adeval_available():
        import adeval  # noqa: F401


# --------------------------------------------------------------------------------------------- metrics


def metric_case(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 maps and bool masks: a third of the images normal, the others with a blob and a long
    one-pixel-wide staircase scratch; GT pixels score higher on average."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(count):
        if index % 3 == 0:
            continue
        top, left = rng.integers(0, size * 3 // 4, size=2)
        height, width = rng.integers(2, size // 6, size=2)
        masks[index, top : top + height, left : left + width] = True
        row, col = rng.integers(0, size // 2, size=2)
        steps = np.arange(rng.integers(size // 4, size // 2))
        masks[index, row + steps // 3, col + steps] = True
    maps = rng.standard_normal(size=masks.shape, dtype=np.float32)
    maps += masks * rng.random(masks.shape, dtype=np.float32) * 2.0
    return maps, masks


def ours_pixel(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """The engine alone: AUROC, AP, F1-max, IoU-max, AUPRO (and the 200-threshold PRO) in one pass."""
    import torch

    from anorefine.metrics import pixel_metrics

    result = pixel_metrics([torch.from_numpy(maps)], [torch.from_numpy(masks)])
    return {"auroc": result.pixel_auroc, "ap": result.pixel_ap, "aupro": result.aupro}


def ours_all(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """``compute_metrics``: every metric, image-level and boundary F1 included."""
    from anorefine.metrics import compute_metrics

    result = compute_metrics(maps, masks)
    return {"auroc": result["pixel_auroc"], "ap": result["pixel_ap"], "aupro": result["aupro"]}


def official_aupro(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """MVTec's compute_pro structure in numpy (anorefine/metrics/references.py), float64 sums."""
    return {"aupro": aupro_mvtec(maps, masks)}


def sklearn_pixel(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """sklearn roc_auc_score and average_precision_score over all pixels."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth, scores = masks.ravel(), maps.ravel()
    return {"auroc": roc_auc_score(truth, scores), "ap": average_precision_score(truth, scores)}


def torchmetrics_exact(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """torchmetrics BinaryAUROC and BinaryAveragePrecision with thresholds=None (exact mode)."""
    import torch
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    scores, truth = torch.from_numpy(maps).ravel(), torch.from_numpy(masks).ravel().int()
    values = {}
    for name, metric in (
        ("auroc", BinaryAUROC(thresholds=None)),
        ("ap", BinaryAveragePrecision(thresholds=None)),
    ):
        metric.update(scores, truth)
        values[name] = float(metric.compute())
    return values


def anomalib_aupro(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """anomalib's AUPRO metric (connected components on the CPU, float32 cumulative sums)."""
    import torch
    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=0.3)
    metric.update(torch.from_numpy(maps), torch.from_numpy(masks).float())
    return {"aupro": float(metric.compute())}


def adeval_all(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """The ``adeval`` package's auroc_aupr_aupro (binned curves, 1000 strips)."""
    from adeval import auroc_aupr_aupro

    if not hasattr(np, "trapz"):  # adeval 1.1.0 calls np.trapz, which numpy 2 renamed
        setattr(np, "trapz", np.trapezoid)  # noqa: B010

    auroc, ap, aupro = auroc_aupr_aupro(maps, masks.astype(np.uint8))
    return {"auroc": auroc, "ap": ap, "aupro": aupro}


def adeval_available() -> bool:
    try:
        import adeval  # noqa: F401
    except ImportError:
        return False
    return True


METRIC_METHODS: list[tuple[str, Callable[..., dict[str, float]]]] = [
    ("ours: five pixel metrics, one pass (`pixel_metrics`)", ours_pixel),
    ("ours: `compute_metrics` (all metrics, + boundary F1, PRO-200, image)", ours_all),
    ("official-style AUPRO alone (numpy, MVTec `compute_pro`)", official_aupro),
    ("sklearn AUROC + AP", sklearn_pixel),
    ("torchmetrics exact AUROC + AP", torchmetrics_exact),
    ("anomalib AUPRO", anomalib_aupro),
    ("adeval AUROC + AP + AUPRO", adeval_all),
]


def bench_metrics(cases: list[tuple[int, int]], timeout: float) -> list[str]:
    """One table per case: time, ratio to the official AUPRO, peak extra memory, value differences."""
    lines = []
    for count, size in cases:
        maps, masks = metric_case(count, size)
        results = {}
        for name, fn in METRIC_METHODS:
            if fn is adeval_all and not adeval_available():
                results[name] = Measurement(
                    error="adeval is not installed (`pip install -e .[bench]`, as `make bench` does)"
                )
                continue
            results[name] = measure(fn, maps, masks, timeout=timeout)
            print(f"  {count}x{size}²  {name}: {results[name].seconds or results[name].error}", flush=True)
        reference = {
            **(results["sklearn AUROC + AP"].value or {}),
            **(results["official-style AUPRO alone (numpy, MVTec `compute_pro`)"].value or {}),
        }
        official = results["official-style AUPRO alone (numpy, MVTec `compute_pro`)"].seconds
        pixels = count * size * size
        lines += [
            f"### {count} maps of {size}² ({pixels / 1e6:.1f} M pixels, {int(masks.any((1, 2)).sum())} "
            "defective images)",
            "",
            "| method | wall s (CPU) | time / official AUPRO | peak extra MB | |Δ AUROC| | |Δ AP| "
            "| |Δ AUPRO| "
            "| load | GPU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, result in results.items():
            if result.error:
                lines.append(f"| {name} | {result.error} | | | | | | | {GPU_COLUMN} |")
                continue
            diffs = [
                f"{abs(result.value[key] - reference[key]):.1e}"
                if key in result.value and key in reference
                else "–"
                for key in ("auroc", "ap", "aupro")
            ]
            ratio = f"{result.wall / official:.2f}×" if official else "–"
            lines.append(
                f"| {name} | {result.wall:.2f} | {ratio} | {result.peak_mb:.0f} | "
                + " | ".join(diffs)
                + f" | {result.load:.1f} | {GPU_COLUMN} |"
            )
        lines += ["", *metric_verdict(results, official), ""]
    return lines


def metric_verdict(results: dict[str, Measurement], official: float | None) -> list[str]:
    """The acceptance checks of this case, stated with their numbers."""
    ours = results["ours: five pixel metrics, one pass (`pixel_metrics`)"]
    if ours.error or official is None:
        return ["Checks not evaluated: a measurement failed."]
    reference = {
        **results["sklearn AUROC + AP"].value,
        **results["official-style AUPRO alone (numpy, MVTec `compute_pro`)"].value,
    }
    worst = max(abs(ours.value[key] - reference[key]) for key in ("auroc", "ap", "aupro"))
    return [
        f"- all five pixel metrics {ours.seconds:.2f} s vs official AUPRO alone {official:.2f} s: "
        f"{'faster' if ours.wall < official else 'NOT faster'} ({ours.wall / official:.2f}×)",
        f"- peak extra memory {ours.peak_mb:.0f} MB: "
        f"{'under' if ours.peak_mb < 1.5 * 1024 else 'OVER'} 1.5 GB",
        f"- largest difference to the references (AUROC/AP: sklearn, AUPRO: numpy MVTec-style) {worst:.1e}: "
        f"{'within' if worst <= 1e-6 else 'NOT within'} 1e-6",
    ]


# ------------------------------------------------------------------------------- detectors, refiners


def best_images_per_second(
    runs: dict[str, Callable[[Any], Any]], size: int, batch: int, rounds: int, device: str = "cpu"
) -> dict[str, float]:
    """Images per second of each ``run(images)`` on the same random (batch, 3, size, size) images: one
    warm-up call each, then ``rounds`` rounds in which the calls take turns; each keeps its fastest
    round, so a busy moment of a shared machine hits neither side of a ratio alone. On CUDA each
    call is timed up to the end of its kernels (synchronised)."""
    import torch

    def finish() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    best = dict.fromkeys(runs, float("inf"))
    with torch.no_grad():
        for run in runs.values():
            run(images)
        for _ in range(rounds):
            for name, run in runs.items():
                finish()
                started = time.perf_counter()
                run(images)
                finish()
                best[name] = min(best[name], time.perf_counter() - started)
    return {name: batch / seconds for name, seconds in best.items()}


def fitted_patchcore(backbone: str, device: str = "cpu") -> Any:
    """PatchCore at 256² with random backbone weights, fitted on 8 random images."""
    import torch

    from anorefine.detectors.patchcore import PatchCoreDetector
    from anorefine.weights import RANDOM

    torch.manual_seed(0)
    detector = PatchCoreDetector(backbone=backbone, weights=RANDOM, image_size=256).to(device).eval()
    with torch.no_grad():
        batches = [{"image": torch.rand(4, 3, 256, 256).to(device)} for _ in range(2)]
        detector.fit(cast("DataLoader", batches))  # any iterable of batches, as a loader yields
    return detector


def patchcore_speed(backbone: str, device: str = "cpu") -> dict[str, float]:
    detector = fitted_patchcore(backbone, device)
    return best_images_per_second({"ips": detector}, 256, RUN_BATCH, rounds=3, device=device)


def winclip_speed(device: str = "cpu") -> dict[str, float]:
    """Ours (WinClipDetector, map at the patch grid) and anomalib's WinClipModel.forward, same weights."""
    from anorefine.detectors.winclip import WinClipDetector
    from anorefine.weights import RANDOM

    detector = WinClipDetector(image_size=240, weights=RANDOM).to(device).eval()
    runs: dict[str, Callable[[Any], Any]] = {"ips": detector, "peer_ips": detector.model}
    return best_images_per_second(runs, 240, batch=2, rounds=2, device=device)


def anomalyclip_speed(device: str = "cpu", batch: int = 1, bf16: bool = False) -> dict[str, float]:
    """AnomalyCLIP at 518² (ViT-L-14-336), optionally under bf16 autocast (the GPU goal's setting)."""
    import torch

    from anorefine.detectors.anomalyclip import AnomalyClipDetector
    from anorefine.weights import RANDOM

    detector = AnomalyClipDetector(weights=RANDOM).to(device).eval()

    def run(images: Any) -> Any:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            return detector(images)

    rounds = 1 if batch == 1 else 3
    return best_images_per_second({"ips": run}, 518, batch=batch, rounds=rounds, device=device)


def refined_patchcore_speed(refiner: Any, device: str, rounds: int) -> dict[str, float]:
    """PatchCore (EfficientNet-Lite0) + ``refiner`` against PatchCore alone, 256², batches of RUN_BATCH."""
    detector = fitted_patchcore("efficientnet_lite0", device)
    refiner = refiner.to(device).eval()
    refiner.attach(detector)
    runs = {"ips": lambda images: refiner(images, detector(images)), "peer_ips": detector}
    return best_images_per_second(runs, 256, RUN_BATCH, rounds=rounds, device=device)


def ard_overhead(device: str = "cpu") -> dict[str, float]:
    """The ARD refiner (default settings) on PatchCore (EfficientNet-Lite0), 256²."""
    from anorefine.refiners.ard import ArdRefiner

    refiner = ArdRefiner()
    refiner.start_training()  # as after PGT: an untrained ARD returns the base map without decoding
    return refined_patchcore_speed(refiner, device, rounds=3)


def onnx_speed() -> dict[str, float]:
    """PatchCore (EfficientNet-Lite0) + ARD exported by ``anorefine.export`` and run in onnxruntime,
    against the same graph in PyTorch, 256², batches of RUN_BATCH, torch's thread count on both sides."""
    import tempfile

    import torch

    from anorefine.export import DEFAULT_OPSET, ExampleImages, ScoringGraph, export_graph
    from anorefine.onnx_engine import OnnxScorer
    from anorefine.refiners.ard import ArdRefiner

    refiner = ArdRefiner()
    refiner.start_training()  # as after PGT (see ard_overhead)
    graph = ScoringGraph(fitted_patchcore("efficientnet_lite0"), refiner)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_graph(graph, ExampleImages(256).images, path, DEFAULT_OPSET, "the bench's PatchCore + ARD")
        scorer = OnnxScorer.load(path)
    with torch.no_grad():
        return best_images_per_second({"ips": scorer, "peer_ips": graph}, 256, RUN_BATCH, rounds=3)


def f2pad_speed(device: str = "cpu") -> dict[str, float]:
    """F2PAD (default settings, random guidance backbone) on PatchCore (EfficientNet-Lite0), 256²."""
    from anorefine.refiners.f2pad import F2padRefiner
    from anorefine.refiners.novelty import NoveltyGuidance

    return refined_patchcore_speed(F2padRefiner(guidance=NoveltyGuidance(pretrained=False)), device, rounds=2)


def pgt_speed(device: str = "cpu") -> dict[str, float]:
    """Seconds per group of PGT (default curriculum: 13 images a group) on PatchCore (EfficientNet-Lite0)
    + ARD, two groups of random 256² images; each group is tested, then trained on."""
    import lightning as L
    import torch

    from anorefine.curriculum.pgt import ProgressiveGroupTraining
    from anorefine.refiners.ard import ArdRefiner
    from anorefine.task import AnomalyTask

    generator = torch.Generator().manual_seed(0)
    stream: list[dict[str, Any]] = [
        {
            "image": torch.rand(3, 256, 256, generator=generator),
            "mask": torch.zeros(1, 256, 256),
            "label": 0,
            "has_mask": True,
            "index": index,
        }
        for index in range(26)
    ]
    stream[0]["mask"][:, 100:120, 100:140] = 1
    stream[0]["label"] = 1
    task = AnomalyTask(fitted_patchcore("efficientnet_lite0", device), ArdRefiner().to(device))

    def make_trainer(purpose: str = "evaluate", **overrides: Any) -> L.Trainer:
        fit = (
            {"max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0} if purpose == "fit" else {}
        )
        quiet = {
            **fit,
            "logger": False,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "accelerator": "gpu" if device.startswith("cuda") else "cpu",
        }
        return L.Trainer(**{**quiet, **overrides})

    started = time.perf_counter()
    extras = ProgressiveGroupTraining().evaluate(task, make_trainer, cast("Dataset", stream), batch_size=8)
    return {"seconds_per_group": (time.perf_counter() - started) / len(extras["groups"])}


#: MSM inputs: (patches, channels) of one layer. ViT-B-16 at 512² (MuSc runs it at 512: 518 is not a
#: multiple of 16); EfficientNet-Lite0's stride-16 stage at 518² (33×33 cells, 112 channels).
MSM_CASES = {"ViT-B-16 @512²": (1024, 768), "EfficientNet-Lite0 stride 16 @518²": (1089, 112)}
MSM_IMAGES, MSM_QUERIES = 100, 4


def msm_case(patches: int, channels: int, device: str = "cpu") -> Any:
    """MSM_IMAGES random unit-patch feature sets (one layer, one r) of the given shape."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(
        torch.randn(MSM_IMAGES, patches, channels, generator=generator), dim=-1
    ).to(device)


def msm_blocked(patches: int, channels: int, device: str = "cpu") -> dict[str, float]:
    """Ours: nearest distances by blocked matmuls (block 16, capped on a CPU), MSM_QUERIES images vs 99."""
    import torch

    from anorefine.detectors.musc import mutual_scores

    z = msm_case(patches, channels, device)
    started = time.perf_counter()
    for i in range(MSM_QUERIES):
        scores = mutual_scores(z[i], torch.cat([z[:i], z[i + 1 :]]), (0.0, 0.3), block_size=16)
    scores.sum().item()  # waits for a GPU's kernels
    return {"ms_per_image": 1000 * (time.perf_counter() - started) / MSM_QUERIES}


def msm_unblocked(patches: int, channels: int) -> dict[str, float]:
    """The straightforward MSM (the official fast form): one cdist of a query against every other
    image's patches at once, min over each image's patches, the lowest 30% averaged."""
    import torch

    z = msm_case(patches, channels)
    started = time.perf_counter()
    for i in range(MSM_QUERIES):
        others = torch.cat([z[:i], z[i + 1 :]])
        distances = torch.cdist(z[i], others.reshape(-1, channels)).view(patches, len(others), patches)
        nearest = distances.min(-1).values
        nearest.topk(int(0.3 * len(others)), dim=1, largest=False).values.mean(1)
    return {"ms_per_image": 1000 * (time.perf_counter() - started) / MSM_QUERIES}


def bench_msm(quick: bool, timeout: float) -> list[str]:
    """MuSc's mutual scoring: ours (blocked) against the unblocked official form, same inputs."""
    lines = [
        "| layer (patches × channels) | ours, blocked: ms/image | peak MB | unblocked cdist: ms/image "
        "| peak MB | time ratio | load | GPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cases = list(MSM_CASES.items())[:1] if quick else list(MSM_CASES.items())
    for name, (patches, channels) in cases:
        ours = measure(msm_blocked, patches, channels, timeout=timeout)
        peer = measure(msm_unblocked, patches, channels, timeout=timeout)
        print(f"  MSM {name}: {ours.value or ours.error} vs {peer.value or peer.error}", flush=True)
        if ours.error or peer.error:
            lines.append(f"| {name} | {ours.error or ''} | | {peer.error or ''} | | | | {GPU_COLUMN} |")
            continue
        ratio = ours.value["ms_per_image"] / peer.value["ms_per_image"]
        lines.append(
            f"| {name} | {ours.value['ms_per_image']:.0f} | {ours.peak_mb:.0f} | "
            f"{peer.value['ms_per_image']:.0f} | {peer.peak_mb:.0f} | {ratio:.2f}× | "
            f"{ours.load:.1f} | {GPU_COLUMN} |"
        )
    return lines


#: A 200-image category at 256² on PatchCore-Lite0's stride-8 grid: 200·32·32 patches, projected to 128.
CORESET_ROWS, CORESET_DIM = 200 * 32 * 32, 128


def coreset_case(rows: int) -> Any:
    import torch

    return torch.randn(rows, CORESET_DIM, generator=torch.Generator().manual_seed(0))


def coreset_ours(rows: int, ratio: float) -> dict[str, Any]:
    import torch

    from anorefine.detectors.coreset import greedy_coreset_indices

    features = coreset_case(rows)
    torch.manual_seed(0)  # the start anomalib draws (tests/test_patchcore.py)
    start = int(torch.randint(high=rows, size=(1,)).squeeze())
    started = time.perf_counter()
    picks = greedy_coreset_indices(features, int(rows * ratio), start)
    return {"s": time.perf_counter() - started, "picks": picks.tolist()}


def coreset_anomalib(rows: int, ratio: float) -> dict[str, Any]:
    import torch
    from anomalib.models.components.sampling import KCenterGreedy

    features = coreset_case(rows)[:, None]  # 3-d input: anomalib skips its projection, as ours here
    torch.manual_seed(0)
    sampler = KCenterGreedy(features, ratio)
    started = time.perf_counter()
    picks = sampler.select_coreset_idxs()
    return {"s": time.perf_counter() - started, "picks": list(picks)}


def bench_coreset(quick: bool, timeout: float) -> list[str]:
    """PatchCore's greedy coreset: ours (pooled picks) against anomalib's KCenterGreedy, same rows."""
    lines = [
        "| rows × dims, coreset | ours: s | peak MB | anomalib KCenterGreedy: s | peak MB | time ratio "
        "| same picks | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peer_ratio = 0.01  # anomalib's one pass per pick makes 10% of 200k rows take far too long here
    ours = measure(coreset_ours, CORESET_ROWS, peer_ratio, timeout=timeout)
    peer = measure(coreset_anomalib, CORESET_ROWS, peer_ratio, timeout=timeout)
    label = f"{CORESET_ROWS} × {CORESET_DIM}, {peer_ratio:.0%}"
    if ours.error or peer.error:
        lines.append(f"| {label} | {ours.error or ''} | | {peer.error or ''} | | | | |")
    else:
        same = ours.value["picks"] == peer.value["picks"]
        lines.append(
            f"| {label} | {ours.value['s']:.1f} | {ours.peak_mb:.0f} | {peer.value['s']:.1f} | "
            f"{peer.peak_mb:.0f} | {ours.value['s'] / peer.value['s']:.2f}× | "
            f"{'yes' if same else 'no'} | {ours.load:.1f} |"
        )
    if not quick:
        full = measure(coreset_ours, CORESET_ROWS, 0.1, timeout=timeout)
        seconds = f"{full.value['s']:.1f}" if not full.error else full.error
        peak = f"{full.peak_mb:.0f}" if not full.error else ""
        label = f"{CORESET_ROWS} × {CORESET_DIM}, 10% (the default)"
        lines.append(f"| {label} | {seconds} | {peak} | not run | | | | {full.load:.1f} |")
    print(f"  coreset: {lines[2:]}", flush=True)
    return lines


def bench_models(quick: bool, timeout: float) -> list[str]:
    """Detector throughput and refiner costs, each in its own child process."""
    rows: list[tuple[str, Callable[[], dict[str, float]], str]] = [
        ("PatchCore, EfficientNet-Lite0, 256²", lambda: patchcore_speed("efficientnet_lite0"), ""),
        ("PatchCore, Wide-ResNet50-2, 256²", lambda: patchcore_speed("wide_resnet50_2"), ""),
        ("WinCLIP ours (ViT-B-16-plus-240, 240²)", winclip_speed, "anomalib WinClipModel.forward"),
        ("ARD refiner on PatchCore Lite0, 256²", ard_overhead, REFINED_DETECTOR),
        ("F2PAD refiner on PatchCore Lite0, 256²", f2pad_speed, REFINED_DETECTOR),
        ("onnxruntime: PatchCore Lite0 + ARD exported, 256²", onnx_speed, ONNX_PEER),
    ]
    if not quick:
        rows.insert(3, ("AnomalyCLIP (ViT-L-14-336 at 518²)", anomalyclip_speed, ""))
        rows.append(("PGT (2 groups of 13, ARD, PatchCore Lite0, 256²)", pgt_speed, ""))
    lines = [
        "| what | CPU images/s (or wall s per group) | peer in the same run | ratio to the peer | "
        "peak MB | load | GPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, fn, peer in rows:
        result = measure(fn, timeout=timeout)
        print(f"  {name}: {result.value or result.error}", flush=True)
        if result.error:
            lines.append(f"| {name} | {result.error} | | | | | {GPU_COLUMN} |")
            continue
        value = result.value
        if "seconds_per_group" in value:
            speed = f"{value['seconds_per_group']:.1f} s per group"
        else:
            speed = f"{value['ips']:.2f} images/s ({1000 / value['ips']:.0f} ms/image)"
        ratio = ""
        if peer:
            times = value["peer_ips"] / value["ips"]
            ratio = f"{times:.2f}× the peer's time per image"
            if peer == REFINED_DETECTOR:
                ratio += f" (the refiner's own time: {times - 1:.2f}× the detector's)"
            peer = f"{peer}: {value['peer_ips']:.2f} images/s"
        lines.append(
            f"| {name} | {speed} | {peer} | {ratio} | {result.peak_mb:.0f} | {result.load:.1f} "
            f"| {GPU_COLUMN} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """``anorefine bench [--quick] [--output PATH]``."""
    parser = argparse.ArgumentParser(prog="anorefine bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small metric case and the light detectors")
    parser.add_argument("--output", type=Path, default=Path("docs") / "benchmarks.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()
    cases = [(150, 256)] if args.quick else [(150, 256), (150, 512), (60, 1024)]
    import_libraries()
    print("metrics", flush=True)
    metric_lines = bench_metrics(cases, timeout=300.0)
    print("detectors and refiners", flush=True)
    model_lines = bench_models(args.quick, timeout=600.0)
    print("MuSc mutual scoring", flush=True)
    msm_lines = bench_msm(args.quick, timeout=600.0)
    print("PatchCore coreset", flush=True)
    coreset_lines = bench_coreset(args.quick, timeout=900.0)
    load_end = os.getloadavg()
    header = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`anorefine bench{' --quick' if args.quick else ''}`) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - started:.0f} s.",
        "",
        f"**Machine:** {machine()}.",
        f"Load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in load_end)} at the end; the `load` column is the 1-minute "
        "load when each call started. The machine is shared, so absolute times vary between runs; the ratios "
        "compare calls of the same run.",
        "",
        "Each call runs in its own forked process: *peak extra MB* is its peak resident memory minus its "
        "resident memory before the call (inputs excluded).",
        "",
        "## Pixel metrics",
        "",
        "Random float32 maps; a third of the images are normal, the others carry a rectangle and a long "
        "one-pixel-wide staircase scratch (8-connected). Differences are to sklearn (AUROC, AP) and to the "
        "numpy MVTec-style AUPRO of the tests. torchmetrics squashes scores outside [0, 1] with a sigmoid "
        "in float32, which merges close scores, and anomalib and adeval cumulate in float32 or bin the "
        "scores: their differences show it.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    models_header = [
        "## Detectors and refiners",
        "",
        "Real-size architectures with random weights (`model.weights=random`: no weight files, timm "
        "`pretrained=False`, open_clip models built without checkpoints), so speeds are real and scores "
        "meaningless. PatchCore is fitted on 8 random images (coreset 10%). PatchCore, ARD and F2PAD see "
        f"batches of {RUN_BATCH} "
        "images, as in a run; the CLIP models 1 or 2. Images/s: after one warm-up call, the fastest of 1–3 "
        "rounds in which the call and its peer take turns. The ratio is the time per image relative to the "
        "peer named (ARD and F2PAD: the refiner's cost on top of its detector, the peer being that "
        "detector alone; onnxruntime: the graph `anorefine export` writes, against its own PyTorch "
        "modules, both on torch's thread count). PGT: wall time of the default curriculum per group of "
        "13 images (test the group, paint and map its synthetic images, train the ARD), averaged over two "
        "groups.",
        "",
    ]
    msm_header = [
        "",
        "## MuSc mutual scoring (MSM)",
        "",
        f"One layer and one aggregation degree of MSM with {MSM_IMAGES} reference images of random unit "
        f"features: each of {MSM_QUERIES} query images against the other {MSM_IMAGES - 1} (a category of "
        f"{MSM_IMAGES} costs {MSM_IMAGES}× this per layer and r). Ours computes nearest distances by "
        "blocked matmuls (16 images a block, on a CPU at most 2^20 similarities); the peer is the official "
        "fast form, one cdist against every other image at once. Both give the same scores "
        "(tests/test_musc.py).",
        "",
    ]
    coreset_header = [
        "",
        "## PatchCore's greedy coreset",
        "",
        f"Random rows standing for a 200-image category at 256² on PatchCore-Lite0's stride-8 grid "
        f"({CORESET_ROWS} patches, already projected to {CORESET_DIM} dimensions). Ours picks exactly what "
        "one full pass per pick would (tests/test_patchcore.py), in batches inside a pool of the farthest "
        "rows; the peer is anomalib's KCenterGreedy on the same rows (no projection on either side). "
        "*Same picks* compares the two index lists: they agree on small inputs (tests), but over "
        "thousands of float32 picks rounding of the two distance formulas (anomalib's direct norm, our "
        "expanded one) can break a near-tie differently, after which the lists diverge.",
        "",
    ]
    text = header + metric_lines + models_header + model_lines + msm_header + msm_lines
    text += coreset_header + coreset_lines
    previous = args.output.read_text() if args.output.exists() else ""
    gpu = previous[len(without_gpu_section(previous)) :].strip("\n") or "\n".join(GPU_PLACEHOLDER)
    args.output.write_text("\n".join(text) + "\n\n" + gpu + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
