"""``make bench-gpu`` (``anorefine bench --gpu``): make bench's GPU column, in one process on one CUDA
device, and a GPU demo run.

Rewrites only the ``## GPU`` section of docs/benchmarks.md (``make bench`` keeps it when it rewrites
the CPU sections). The rows are bench.py's own calls with ``device`` set: PatchCore (Lite0, WRN50),
the ARD and F2PAD on PatchCore-Lite0 (their own time against the detector's), WinCLIP against
anomalib's, AnomalyCLIP at 518² in bf16 (batched; goal: 15 ms per image on an H200-class GPU), MuSc's
blocked mutual scoring, PGT per group, the metrics engine on CUDA tensors, then
``anorefine train refiner=ard curriculum=pgt trainer=gpu`` on the demo. Each call is timed up to the
end of its kernels; peak MB is torch's peak allocated GPU memory during the call. A failing row is
reported as its error and the script goes on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anorefine import bench

DEMO_COMMAND = ("-m", "anorefine", "train", "refiner=ard", "curriculum=pgt", "trainer=gpu")


def on_device(
    fn: Callable[..., dict[str, Any]], device: str, **kwargs: Any
) -> tuple[dict[str, Any] | str, float]:
    """``fn(device=device, **kwargs)``: its value (or its error as text) and peak device MB."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        value: dict[str, Any] | str = fn(device=device, **kwargs)
    except Exception as error:  # reported in the table, the bench goes on
        value = f"{type(error).__name__}: {error}"
    peak = torch.cuda.max_memory_allocated() / bench.MB if cuda else 0.0
    return value, peak


def metrics_speed(device: str, count: int, size: int) -> dict[str, Any]:
    """The metrics engine (``pixel_metrics``) on maps already on ``device``, against the same call on
    CPU tensors: seconds of each (after one warm-up) and the largest difference of the values."""
    import torch

    from anorefine.metrics import pixel_metrics

    maps, masks = bench.metric_case(count, size)
    values, seconds = {}, {}
    for where in ("cpu", device):
        inputs = [torch.from_numpy(maps).to(where)], [torch.from_numpy(masks).to(where)]
        pixel_metrics(*inputs)
        started = time.perf_counter()
        result = pixel_metrics(*inputs)  # returns Python floats: the device's work is done
        seconds[where] = time.perf_counter() - started
        values[where] = (result.pixel_auroc, result.pixel_ap, result.aupro)
    worst = max(abs(a - b) for a, b in zip(values["cpu"], values[device], strict=True))
    return {"s": seconds[device], "cpu_s": seconds["cpu"], "max_diff": worst}


def model_rows(device: str, quick: bool) -> list[str]:
    """The detector and refiner rows: images/s, the peer in the same call, ratio, peak MB."""
    rows: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any], str]] = [
        ("PatchCore, EfficientNet-Lite0, 256², batch 16", bench.patchcore_speed,
         {"backbone": "efficientnet_lite0"}, ""),
        ("ARD refiner on PatchCore Lite0, 256², batch 16", bench.ard_overhead, {}, bench.REFINED_DETECTOR),
        ("F2PAD refiner on PatchCore Lite0, 256², batch 16", bench.f2pad_speed, {}, bench.REFINED_DETECTOR),
        ("WinCLIP ours (ViT-B-16-plus-240, 240²), batch 2", bench.winclip_speed, {},
         "anomalib WinClipModel.forward"),
    ]  # fmt: skip
    if not quick:
        rows[1:1] = [("PatchCore, Wide-ResNet50-2, 256², batch 16", bench.patchcore_speed,
                      {"backbone": "wide_resnet50_2"}, "")]  # fmt: skip
        rows += [
            ("AnomalyCLIP (ViT-L-14-336, 518²), bf16, batch 8", bench.anomalyclip_speed,
             {"batch": 8, "bf16": True}, ""),
            ("AnomalyCLIP (ViT-L-14-336, 518²), float32, batch 1", bench.anomalyclip_speed, {}, ""),
        ]  # fmt: skip
    lines = [
        "| what | images/s | peer in the same call | ratio to the peer | peak MB |",
        "|---|---|---|---|---|",
    ]
    for name, fn, kwargs, peer in rows:
        value, peak = on_device(fn, device, **kwargs)
        print(f"  {name}: {value}", flush=True)
        if isinstance(value, str):
            lines.append(f"| {name} | {value} | | | |")
            continue
        speed = f"{value['ips']:.1f} images/s ({1000 / value['ips']:.1f} ms/image)"
        ratio = ""
        if peer:
            times = value["peer_ips"] / value["ips"]
            ratio = f"{times:.2f}× the peer's time per image"
            if peer == bench.REFINED_DETECTOR:
                ratio += f" (the refiner's own time: {times - 1:.2f}× the detector's)"
            peer = f"{peer}: {value['peer_ips']:.1f} images/s"
        lines.append(f"| {name} | {speed} | {peer} | {ratio} | {peak:.0f} |")
    return lines


def show_metrics(value: dict[str, Any]) -> str:
    return f"{value['s']:.3f} s (CPU {value['cpu_s']:.2f} s), values differ by {value['max_diff']:.1e}"


def other_rows(device: str, quick: bool) -> list[str]:
    """MSM, PGT and the metrics engine: one figure each."""
    patches, channels = bench.MSM_CASES["ViT-B-16 @512²"]
    rows: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any], Callable[[dict[str, Any]], str]]] = [
        ("metrics engine, 150 maps of 256²", metrics_speed, {"count": 150, "size": 256}, show_metrics),
        ("MuSc MSM, ViT-B-16 @512², one layer and r, blocked", bench.msm_blocked,
         {"patches": patches, "channels": channels}, lambda v: f"{v['ms_per_image']:.1f} ms per image"),
    ]  # fmt: skip
    if not quick:
        rows += [
            ("metrics engine, 60 maps of 1024²", metrics_speed, {"count": 60, "size": 1024}, show_metrics),
            ("PGT (2 groups of 13, ARD, PatchCore Lite0, 256²)", bench.pgt_speed, {},
             lambda v: f"{v['seconds_per_group']:.2f} s per group"),
        ]  # fmt: skip
    lines = ["| what | result | peak MB |", "|---|---|---|"]
    for name, fn, kwargs, show in rows:
        value, peak = on_device(fn, device, **kwargs)
        print(f"  {name}: {value}", flush=True)
        lines.append(f"| {name} | {value if isinstance(value, str) else show(value)} | {peak:.0f} |")
    return lines


def demo_row(device: str) -> list[str]:
    """``train.py refiner=ard curriculum=pgt trainer=gpu`` on the demo: wall time and mean metrics."""
    if not device.startswith("cuda"):
        return ["The demo run needs a CUDA device (trainer=gpu); not run."]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *DEMO_COMMAND, f"hydra.run.dir={folder}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode:
            return [f"`python {' '.join(DEMO_COMMAND)}` failed after {wall:.0f} s: {done.stderr[-500:]}"]
        mean = json.loads((Path(folder) / "results.json").read_text())["metrics"]["mean"]
    shown = ", ".join(
        f"{key} {100 * mean['base'][key]:.2f} → {100 * mean['refined'][key]:.2f}"
        for key in ("pixel_auroc", "pixel_ap", "aupro")
    )
    return [f"`python {' '.join(DEMO_COMMAND)}`: {wall:.0f} s wall; mean {shown}."]


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(prog="anorefine bench --gpu", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda (default) or cuda:N; cpu only to test this script"
    )
    parser.add_argument("--quick", action="store_true", help="the light rows only, no demo run")
    parser.add_argument("--output", type=Path, default=Path("docs") / "benchmarks.md")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "bench_gpu.py: no CUDA device is visible (torch.cuda.is_available() is False): "
            "run it on a GPU machine"
        )
    started = time.perf_counter()
    name = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "no GPU (CPU test run)"
    )
    bench.import_libraries()
    print("detectors and refiners", flush=True)
    models = model_rows(args.device, args.quick)
    print("MSM, PGT, metrics", flush=True)
    others = other_rows(args.device, args.quick)
    print("demo run", flush=True)
    demo = [] if args.quick else demo_row(args.device)
    lines = [
        bench.GPU_SECTION,
        "",
        f"Written by `make bench-gpu` (`anorefine bench --gpu{' --quick' if args.quick else ''}`) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - started:.0f} s on "
        f"**{name}** (device `{args.device}`); host: {bench.machine()}. Random weights, as the CPU rows; "
        "each call timed to the end of its kernels, its peak allocated device memory beside it.",
        "",
        *models,
        "",
        *others,
        "",
        *demo,
    ]
    text = args.output.read_text() if args.output.exists() else "# Benchmarks\n"
    args.output.write_text(bench.without_gpu_section(text) + "\n\n" + "\n".join(lines) + "\n")
    print(f"wrote the GPU section of {args.output}")


if __name__ == "__main__":
    main()
