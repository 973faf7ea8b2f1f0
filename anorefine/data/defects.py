"""Defect painter for the demo dataset: scratch, hole, stain and crack with exact masks.

Each defect is an alpha map; the mask is `alpha > 0.5` and only masked pixels are blended,
so every pixel outside the mask is left byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "crack")
MIN_AREA, MAX_AREA = 0.001, 0.03  # defect area as a fraction of the image
_MAX_TRIES = 100

Shape = tuple[int, int]


def _polyline_alpha(points: np.ndarray, width: float, shape: Shape) -> np.ndarray:
    """Anti-aliased alpha of a polyline (points (N, 2) as x, y) of the given width in pixels."""
    alpha = np.zeros(shape, np.float32)
    pad = width + 2
    x0, y0 = np.maximum(np.floor(points.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(points.max(0) + pad).astype(int), (shape[1], shape[0]))
    if x1 <= x0 or y1 <= y0:
        return alpha
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dist = np.full(yy.shape, np.inf, np.float32)
    for (ax, ay), (bx, by) in pairwise(points):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(xx - ax - t * dx, yy - ay - t * dy))
    alpha[y0:y1, x0:x1] = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
    return alpha


def _walk(start: np.ndarray, angle: float, steps: int, step: float, turn: Callable[[], float]) -> np.ndarray:
    """Points of a walk from `start`; `turn()` gives the heading change at each step."""
    points = [start]
    for _ in range(steps):
        angle += turn()
        points.append(points[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    return np.stack(points)


def _blob(
    rng: np.random.Generator, shape: Shape, radius: float, softness: float
) -> tuple[np.ndarray, np.ndarray]:
    """Irregular blob: (alpha, depth), depth 0 at the rim rising to 1 at the centre."""
    h, w = shape
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.full(shape, radius, np.float32)
    for k in range(2, 6):
        r += radius * rng.uniform(0.0, 0.18 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = r - np.hypot(xx - cx, yy - cy)  # signed distance to the rim, positive inside
    alpha = np.clip(inside / softness + 0.5, 0.0, 1.0)
    return alpha, np.clip(inside / r, 0.0, 1.0)


def _scratch(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = base.shape[:2]
    curvature = rng.uniform(-0.06, 0.06)
    start = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h])
    points = _walk(start, rng.uniform(0, 2 * np.pi), int(rng.integers(15, 45)), 3.0,
                   lambda: curvature + rng.normal(0, 0.04))  # fmt: skip
    alpha = _polyline_alpha(points, rng.uniform(1.0, 3.0), (h, w))
    if rng.random() < 0.5:
        paint = base * rng.uniform(0.2, 0.45)
    else:
        paint = base + (1.0 - base) * rng.uniform(0.5, 0.8)
    return alpha, paint


def _crack(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = base.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    start = rng.uniform([0.25 * w, 0.25 * h], [0.75 * w, 0.75 * h])
    trunk = _walk(start, angle, int(rng.integers(12, 30)), 3.5, lambda: rng.normal(0, 0.45))
    alpha = _polyline_alpha(trunk, rng.uniform(1.5, 2.5), (h, w))
    for _ in range(rng.integers(1, 4)):
        fork = trunk[rng.integers(1, len(trunk))]
        side = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch = _walk(fork, side, int(rng.integers(4, 12)), 3.0, lambda: rng.normal(0, 0.45))
        alpha = np.maximum(alpha, _polyline_alpha(branch, rng.uniform(1.0, 1.8), (h, w)))
    return alpha, base * rng.uniform(0.1, 0.3)


def _hole(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    alpha, depth = _blob(rng, base.shape[:2], rng.uniform(5.0, 13.0), softness=1.5)
    rim, floor = base * 0.55, base * 0.08 + 0.02
    t = np.clip(depth / 0.4, 0.0, 1.0)[..., None]
    t = t * t * (3 - 2 * t)  # smoothstep from the soft rim into the dark floor
    return alpha, rim * (1 - t) + floor * t


def _stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    alpha, _ = _blob(rng, base.shape[:2], rng.uniform(9.0, 20.0), softness=4.0)
    mean = base.reshape(-1, 3).mean(0)
    colour = rng.uniform(0.0, 1.0, 3)
    while np.abs(colour - mean).max() < 0.35:
        colour = rng.uniform(0.0, 1.0, 3)
    luminance = base.mean(axis=2, keepdims=True)
    return alpha * rng.uniform(0.8, 1.0), np.clip(colour * (0.6 + 0.8 * luminance), 0.0, 1.0)


_PAINTERS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "crack": _crack}


def paint_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one `kind` defect on a uint8 (H, W, 3) image: returns (painted uint8, mask bool).

    Shapes are resampled until the mask covers MIN_AREA..MAX_AREA of the image.
    """
    base = image.astype(np.float32) / 255.0
    for _ in range(_MAX_TRIES):
        alpha, paint = _PAINTERS[kind](base, rng)
        mask = alpha > 0.5
        if MIN_AREA <= mask.mean() <= MAX_AREA:
            break
    else:
        raise RuntimeError(f"could not draw a {kind} defect within the area range in {_MAX_TRIES} tries")
    a = alpha[mask][:, None]
    out = image.copy()
    out[mask] = np.clip(np.rint(255.0 * (base[mask] * (1 - a) + paint[mask] * a)), 0, 255).astype(np.uint8)
    return out, mask
