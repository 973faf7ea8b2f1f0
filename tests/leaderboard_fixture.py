"""A run tree exercising every part of the leaderboard; its expected tables are in tests/expected/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anorefine.run_folder import write_json_atomic


def resolved_config(
    dataset: str, model: str, refiner: str, seed: int, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A results.json ``config`` as Hydra resolves it: defaults, then the dotted overrides applied
    (group choices such as ``logger=none`` are already in the names)."""
    config: dict[str, Any] = {
        "seed": seed,
        "dataset": {"name": dataset, "root": f"data/{dataset}", "image_size": 256},
        "model": {"name": model, "image_size": 256},
        "refiner": {"name": refiner, "seed": seed, **({"width": 32} if refiner == "ard" else {})},
        "curriculum": {"name": "pgt" if refiner == "ard" else "none"},
        "logger": {"name": "csv"},
    }
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        *parents, leaf = key.split(".")
        if not parents:
            continue
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


EXPECTED = Path(__file__).resolve().parent / "expected" / "leaderboard"
KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "pro_compat", "pixel_f1_max",
        "pixel_iou_max", "boundary_f1")  # fmt: skip


def _metrics(base: float, refined: float) -> dict[str, dict[str, float]]:
    return {
        "base": {k: round(base + 0.01 * i, 6) for i, k in enumerate(KEYS)},
        "refined": {k: round(refined + 0.013 * i, 6) for i, k in enumerate(KEYS)},
    }


INTERVAL_KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")


def interval_records(categories: list[str], zero: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """A format-3 ``intervals``: each Δ's interval above 0, but those of ``zero[category]`` contain 0."""

    def record(contains: bool) -> dict[str, Any]:
        low, high = (-0.004, 0.061) if contains else (0.012, 0.068)
        return {"low": low, "high": high, "contains_zero": contains, "valid": 1000}

    return {
        category: {
            "level": 0.95, "replicates": 1000, "seed": 0, "kinds": {}, "sizes": {},
            "delta": {key: record(key in zero.get(category, ())) for key in INTERVAL_KEYS},
        }
        for category in [*categories, "mean"]
    }  # fmt: skip


def _results(dataset: str, model: str, refiner: str, seed: int, value: float, *overrides: str, **extra: Any):
    categories = extra.pop("categories", ["a", "b"])
    per_category = {c: _metrics(value - 0.05 * i, value - 0.05 * i + 0.04) for i, c in enumerate(categories)}
    if "zero" in extra:  # a format-3 run with bootstrap intervals
        extra.update(format=3, intervals=interval_records(categories, extra.pop("zero")))
    return {
        "dataset": dataset,
        "model": model,
        "refiner": refiner,
        "categories": categories,
        "metrics": {**per_category, "mean": _metrics(value, value + 0.04)},
        "config": resolved_config(dataset, model, refiner, seed, overrides),
        "config_hash": f"{dataset}-{model}-{refiner}-{seed}-{'-'.join(overrides)}",
        "overrides": [f"model={model}", f"refiner={refiner}", f"seed={seed}", *overrides],
        "git_commit": "0123456789abcdef",
        **extra,
    }


def build_tree(root: Path) -> None:
    """Runs (seeds, settings, smoke-only, two datasets), a sweep with an ablation, and problems. The ARD
    runs carry intervals (seed 0: the mean's pixel AP and category b's AUPRO contain 0), the other runs
    none (format 2, refiner=none)."""
    zero = {0: {"mean": ("pixel_ap",), "b": ("aupro",)}, 1: {}}
    for seed, value in ((0, 0.5), (1, 0.6)):
        write_json_atomic(
            root / f"demo_none_{seed}" / "results.json", _results("demo", "patchcore", "none", seed, value)
        )
        write_json_atomic(
            root / f"demo_ard_{seed}" / "results.json",
            _results("demo", "patchcore", "ard", seed, value + 0.05, zero=zero[seed]),
        )
    tiny = _results("demo", "winclip", "none", 0, 0.3, "model.clip=tiny", smoke_only=True)
    write_json_atomic(root / "tiny" / "results.json", tiny)
    one = _results("mvtec", "anomalyclip", "f2pad", 0, 0.7, categories=["bottle"])
    write_json_atomic(root / "mvtec_one" / "results.json", one)
    sweep = root / "multirun" / "ablation_width"
    jobs = []
    for width in (8, 16, 32):
        overrides = (f"refiner.width={width}", "logger=none")
        payload = _results("demo", "patchcore", "ard", 0, 0.4 + width / 200, *overrides)
        jobs.append({"overrides": payload["overrides"], "dir": f"w{width}"})
        write_json_atomic(sweep / f"w{width}" / "results.json", payload)
    jobs.append({"overrides": ["refiner.width=64", "seed=0"], "dir": "w64"})
    write_json_atomic(sweep / "sweep.json", {"jobs": jobs})
    write_json_atomic(root / "failed" / "failure.json", {"error": "RuntimeError: out of memory\nmore"})
    (root / "killed" / ".hydra").mkdir(parents=True)
    (root / "truncated").mkdir()
    (root / "truncated" / "results.json").write_text('{"dataset": "demo", "metr')
