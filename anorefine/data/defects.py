"""Defect painters with exact masks: the demo's kinds, PGT's synthesis kinds and the transfer kinds.

Every kind is a painter ``(base, rng, donor) -> (alpha, paint)`` on float32 (H, W, 3) images in
[0, 1]: ``alpha`` (H, W) says where and how strongly ``paint`` replaces the image; ``donor`` is
another normal image (a source of foreign texture). The mask is ``alpha > 0.5`` and only masked
pixels are blended, so every pixel outside the mask is left unchanged. For most kinds the mask is
exactly the pixels the painter changed; for ``ANNOTATED_KINDS`` it is what an annotator would draw,
which also covers pixels changed very little or not at all (see below).

Kinds (``DEFECT_KINDS``), grouped by what they change:

- the demo painter: ``scratch`` (dark or bright stroke), ``hole`` (dark pit), ``stain`` (saturated
  colour blob), ``crack`` (branching dark line);
- PGT's synthesis: ``perlin`` (a Perlin-noise blob or band filled with a photometrically altered
  foreign texture, as DRAEM does) and ``cutpaste`` (a colour-jittered rectangle of the image pasted
  elsewhere on it);
- new appearance kinds for the transfer protocol (docs/transfer.md): ``dent`` (a smooth, low-contrast
  shading change with no edge and no new texture), ``thread`` (a long thin fibre slightly brighter or
  darker than its surroundings), ``colour`` (the same texture with another hue, luminance kept) and
  ``missing`` (the texture's detail gone: a worn, blurred patch of the same colour);
- kinds real annotation has, with masks drawn as annotators draw them (``ANNOTATED_KINDS``):
  ``burn`` (a generous mask: a small dark scorch core in a wide halo whose darkening falls to 1-3%,
  most of the mask barely changed), ``warp`` (a geometric defect: the texture inside a disc swirled,
  bulged, pinched or pushed by a few pixels, no colour change; the rim, where it barely moved, is
  masked too) and ``faint`` (a low-contrast large region, 3-10% of the image: slightly darker or
  lighter and of slightly lower contrast, 4-8% on average).

Sizes are drawn for 256-px images and scaled with the image. A kind's mask area (fractions of the
image) is ``area_range(kind)``: ``(MIN_AREA, MAX_AREA)`` unless ``KIND_AREA`` says otherwise
(``faint``); ``paint_float`` explains how a caller's own range (PGT's synthesis) is met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import torch
from anomalib.data.utils.generators import generate_perlin_noise
from scipy import ndimage

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "crack")  # the demo dataset's kinds
MIN_AREA, MAX_AREA = 0.001, 0.03  # defect area as a fraction of the image
_MAX_TRIES = 100

Shape = tuple[int, int]
#: (base (H,W,3) float32 in [0,1], rng, donor (H,W,3) float32) -> (alpha (H,W), paint (H,W,3)).
Painter = Callable[[np.ndarray, np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]


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


def _scale(base: np.ndarray) -> float:
    """Painters' sizes are drawn for 256-px images and scaled with the image (1.0 at 256 px)."""
    return min(base.shape[:2]) / 256.0


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2, keepdims=True)


def _curve(
    base: np.ndarray,
    rng: np.random.Generator,
    bend: float,
    margin: float,
    steps: tuple[int, int],
    step: float,
    wiggle: float,
    width: tuple[float, float],
) -> np.ndarray:
    """Alpha of a gently bending stroke: constant curvature in ±``bend`` plus ``wiggle`` noise per step."""
    (h, w), s = base.shape[:2], _scale(base)
    curvature = rng.uniform(-bend, bend)
    start = rng.uniform([margin * w, margin * h], [(1 - margin) * w, (1 - margin) * h])
    points = _walk(start, rng.uniform(0, 2 * np.pi), int(rng.integers(*steps)), step * s,
                   lambda: curvature + rng.normal(0, wiggle))  # fmt: skip
    return _polyline_alpha(points, rng.uniform(*width) * s, (h, w))


def _scratch(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = _curve(base, rng, bend=0.06, margin=0.2, steps=(15, 45), step=3.0, wiggle=0.04, width=(1.0, 3.0))
    if rng.random() < 0.5:
        paint = base * rng.uniform(0.2, 0.45)
    else:
        paint = base + (1.0 - base) * rng.uniform(0.5, 0.8)
    return alpha, paint


def _crack(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (h, w), s = base.shape[:2], _scale(base)
    angle = rng.uniform(0, 2 * np.pi)
    start = rng.uniform([0.25 * w, 0.25 * h], [0.75 * w, 0.75 * h])
    trunk = _walk(start, angle, int(rng.integers(12, 30)), 3.5 * s, lambda: rng.normal(0, 0.45))
    alpha = _polyline_alpha(trunk, rng.uniform(1.5, 2.5) * s, (h, w))
    for _ in range(rng.integers(1, 4)):
        fork = trunk[rng.integers(1, len(trunk))]
        side = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch = _walk(fork, side, int(rng.integers(4, 12)), 3.0 * s, lambda: rng.normal(0, 0.45))
        alpha = np.maximum(alpha, _polyline_alpha(branch, rng.uniform(1.0, 1.8) * s, (h, w)))
    return alpha, base * rng.uniform(0.1, 0.3)


def _hole(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = _scale(base)
    alpha, depth = _blob(rng, base.shape[:2], rng.uniform(5.0, 13.0) * s, softness=1.5 * s)
    rim, floor = base * 0.55, base * 0.08 + 0.02
    t = _smoothstep(depth / 0.4)[..., None]  # from the soft rim into the dark floor
    return alpha, rim * (1 - t) + floor * t


def _stain(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = _scale(base)
    alpha, _ = _blob(rng, base.shape[:2], rng.uniform(9.0, 20.0) * s, softness=4.0 * s)
    mean = base.reshape(-1, 3).mean(0)
    colour = rng.uniform(0.0, 1.0, 3)
    while np.abs(colour - mean).max() < 0.35:
        colour = rng.uniform(0.0, 1.0, 3)
    return alpha * rng.uniform(0.8, 1.0), np.clip(colour * (0.6 + 0.8 * _luminance(base)), 0.0, 1.0)


def _dent(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth shading, a dent (darker) or bump (brighter): 10-25% at the centre, a quarter at the rim."""
    s = _scale(base)
    inside, depth = _blob(rng, base.shape[:2], rng.uniform(8.0, 20.0) * s, softness=s)
    profile = 0.25 + 0.75 * _smoothstep(depth / 0.7)[..., None]  # a faint rim, then a smooth slope
    change = rng.choice([-1.0, 1.0]) * rng.uniform(0.10, 0.25) * profile
    return (inside > 0.5).astype(np.float32), np.clip(base * (1.0 + change), 0.0, 1.0)


def _thread(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A loose fibre: a long, gently curving line 1-2 px wide, 8-20% brighter or darker."""
    alpha = _curve(base, rng, bend=0.03, margin=0.15, steps=(30, 70), step=2.5, wiggle=0.08, width=(1.2, 2.2))
    contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.2)
    return alpha, np.clip(ndimage.uniform_filter(base, size=(9, 9, 1)) + contrast, 0.0, 1.0)


def _colour(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The texture kept, its hue shifted: chroma partly rotated and nudged towards a random tint."""
    s = _scale(base)
    alpha, _ = _blob(rng, base.shape[:2], rng.uniform(9.0, 20.0) * s, softness=2.0 * s)
    luma = _luminance(base)
    tint = rng.uniform(-1.0, 1.0, 3).astype(np.float32)
    tint -= tint.mean()
    tint *= rng.uniform(0.04, 0.1) / max(np.abs(tint).max(), 1e-6)
    chroma, turn = base - luma, rng.uniform(0.3, 0.6)
    shifted = (1 - turn) * chroma + turn * np.roll(chroma, int(rng.integers(1, 3)), axis=2)
    return alpha, np.clip(luma + shifted + tint, 0.0, 1.0)


def _missing(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A worn patch: the texture's detail blurred away, its local colour and brightness kept."""
    s = _scale(base)
    alpha, _ = _blob(rng, base.shape[:2], rng.uniform(9.0, 20.0) * s, softness=2.0 * s)
    return alpha, ndimage.gaussian_filter(base, sigma=(rng.uniform(4.0, 8.0) * s,) * 2 + (0,), mode="reflect")


def _ellipse_distance(
    rng: np.random.Generator,
    shape: Shape,
    radius: float,
    centre: tuple[float, float],
    aspect: tuple[float, float],
) -> np.ndarray:
    """(H,W) squared distance to a random ellipse's centre in units of its axes: the centre drawn in
    ``centre`` (fractions of each side), a random angle, the axis ratio log-uniform in ``aspect``,
    the geometric mean of the axes ``radius``."""
    height, width = shape
    cy, cx = rng.uniform(*centre) * height, rng.uniform(*centre) * width
    angle = rng.uniform(0, math.pi)
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy - cy, xx - cx
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / (radius * math.sqrt(ratio))
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * math.sqrt(ratio) / radius
    return u**2 + v**2


def _perlin_mask(rng: np.random.Generator, shape: Shape, area: float, line: bool) -> np.ndarray:
    """(H,W) bool mask covering ``area`` of the image: a Perlin blob or line near a random centre.

    Pixels are ranked by ``window + noise`` (blob) or ``window - 4|noise|`` (line), where ``window`` is
    an elliptical Gaussian around the centre whose radius matches the area; the top ``area`` fraction
    is the mask, so its size is exact and its outline follows anomalib's Perlin noise.
    """
    height, width = shape
    radius = math.sqrt(area * height * width / math.pi)
    scale = 2 ** min(5, max(1, round(math.log2(max(height, width) / (2 * radius)))))
    with torch.random.fork_rng(devices=[]):  # anomalib draws from torch's global generator
        torch.manual_seed(int(rng.integers(0, 2**31)))
        noise = generate_perlin_noise(height, width, scale=(scale, scale), device=torch.device("cpu")).numpy()
    distance = _ellipse_distance(rng, shape, radius, centre=(0.15, 0.85), aspect=(0.5, 2.0))
    window = np.exp(-distance / (8.0 if line else 2.0))
    score = window - 4.0 * np.abs(noise) if line else window + noise
    count = max(1, round(area * height * width))
    return score >= np.partition(score.ravel(), score.size - count)[score.size - count]


def _photometric(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One generic photometric change of a texture: darken, brighten, invert, channel shuffle,
    contrast or posterise (the appearance of a foreign material)."""
    choice = int(rng.integers(0, 6))
    if choice == 0:
        return texture * rng.uniform(0.15, 0.6)
    if choice == 1:
        return texture + (1.0 - texture) * rng.uniform(0.4, 0.85)
    if choice == 2:
        return 1.0 - texture
    if choice == 3:
        return texture[..., rng.permutation(3)]
    if choice == 4:
        mean = texture.mean()
        return np.clip((texture - mean) * math.exp(rng.uniform(math.log(0.3), math.log(3.0))) + mean, 0, 1)
    levels = 2 ** int(rng.integers(1, 4))
    return np.floor(texture * levels) / levels


def _perlin(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin blob (70%) or band (30%) filled with a flipped/rotated/rolled, altered donor texture."""
    area = math.exp(rng.uniform(math.log(0.002), math.log(0.03)))
    mask = _perlin_mask(rng, base.shape[:2], area, line=rng.random() < 0.3)
    view = np.rot90(donor, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        view = view[:, ::-1]
    view = np.roll(view, (int(rng.integers(0, view.shape[0])), int(rng.integers(0, view.shape[1]))), (0, 1))
    if view.shape != base.shape:  # a non-square donor turned by 90 degrees
        view = np.resize(view, base.shape)
    return mask * np.float32(rng.uniform(0.6, 1.0)), _photometric(np.ascontiguousarray(view), rng)


def _cutpaste(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle of the image, contrast/brightness jittered, pasted at another place."""
    height, width = base.shape[:2]
    area = math.exp(rng.uniform(math.log(0.002), math.log(0.03))) * height * width
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    h = max(1, min(height - 1, round(math.sqrt(area * aspect))))
    w = max(1, min(width - 1, round(math.sqrt(area / aspect))))
    sy, sx, ty, tx = (int(rng.integers(0, n + 1)) for n in (height - h, width - w, height - h, width - w))
    patch = base[sy : sy + h, sx : sx + w]
    patch = np.clip((patch - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.15, 0.15), 0.0, 1.0)
    alpha = np.zeros((height, width), np.float32)
    alpha[ty : ty + h, tx : tx + w] = 1.0
    paint = base.copy()
    paint[ty : ty + h, tx : tx + w] = patch
    return alpha, paint


def _burn(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A scorch mark as annotators draw it: a small ragged core (radius 3.5-7 px), browned and
    darkened to 12-28% at its centre (22-52% at its rim), in a wide faint halo (1.5-3x the core's
    radius) whose darkening falls geometrically from 12-18% at the core's rim to 1-3% at its outer
    edge, blue most (a brownish tint). The mask is core and halo: most of it has barely changed."""
    (h, w), s = base.shape[:2], _scale(base)
    core = rng.uniform(3.5, 7.0) * s
    halo = core * rng.uniform(1.5, 3.0)
    reach = 1.2 * halo  # the halo's outline may bulge past its mean radius
    cx, cy = rng.uniform(reach, w - reach), rng.uniform(reach, h - reach)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta, dist = np.arctan2(yy - cy, xx - cx), np.hypot(xx - cx, yy - cy)
    core_r = np.full((h, w), core, np.float32)  # ragged: strong low harmonics and a little more detail
    for k in range(2, 9):
        core_r += core * rng.uniform(0.0, 0.3 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    halo_r = np.full((h, w), halo, np.float32)
    for k in range(2, 5):
        halo_r += halo * rng.uniform(0.0, 0.12 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    halo_r = np.maximum(halo_r, 1.3 * core_r)  # a ragged core never reaches the halo's edge
    inner, outer = rng.uniform(0.12, 0.18), rng.uniform(0.01, 0.03)
    t = np.clip((dist - core_r) / (halo_r - core_r), 0.0, 1.0)
    darkening = (inner * (outer / inner) ** t)[..., None]  # falls geometrically across the halo
    browning = np.array([0.85, 1.0, 1.15], np.float32)  # blue darkens most: a brownish, yellowed halo
    halo_paint = base * (1.0 - darkening * browning)
    depth = np.clip((core_r - dist) / core_r, 0.0, 1.0)[..., None]
    level = rng.uniform(0.15, 0.35) * (1.5 - 0.7 * _smoothstep(depth / 0.6))  # charred most at the centre
    char = level * (0.6 * base + 0.4 * _luminance(base) * np.array([1.3, 0.95, 0.75], np.float32))
    in_core = _smoothstep((core_r - dist) / (2.0 * s) + 0.5)[..., None]  # a 2-px edge into the halo
    alpha = (dist < halo_r).astype(np.float32)
    return alpha, halo_paint * (1.0 - in_core) + char * in_core


def _warp(base: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A geometric defect: the texture inside a disc of radius 10-24 px displaced by up to 2-5 px
    (at most a quarter of the radius, an eighth for a bulge or pinch; 0 at the rim), no colour change,
    resampled bilinearly. One of a swirl (each circle turned by an angle falling to 0 at the rim), a
    radial bulge or pinch, or a shift (a push that fades to the rim). The mask is the whole disc, also
    its rim where the texture barely moved."""
    (h, w), s = base.shape[:2], _scale(base)
    radius = rng.uniform(10.0, 24.0) * s
    cx, cy = rng.uniform(radius + 1, w - radius - 1), rng.uniform(radius + 1, h - radius - 1)
    mode = int(rng.integers(0, 3))
    amount = min(rng.uniform(2.0, 5.0) * s, (0.25, 0.12, 0.25)[mode] * radius)  # the largest displacement
    x0, y0 = max(int(cx - radius) - 1, 0), max(int(cy - radius) - 1, 0)
    x1, y1 = min(int(cx + radius) + 2, w), min(int(cy + radius) + 2, h)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    rho = np.minimum(np.hypot(dx, dy) / radius, 1.0)
    if mode == 0:  # swirl: turn by phi0 (1 - rho)^2, the largest displacement at rho 1/3 (shear <= 1)
        phi = rng.choice([-1.0, 1.0]) * amount / (4 / 27 * radius) * (1.0 - rho) ** 2
        sx, sy = cx + dx * np.cos(phi) - dy * np.sin(phi), cy + dx * np.sin(phi) + dy * np.cos(phi)
    elif mode == 1:  # radial, amount * 3.5 rho (1 - rho^2)^2: the centre magnified <= 1.7x or shrunk <= 1.4x
        factor = 1.0 - rng.choice([-1.0, 1.0]) * 3.5 * amount / radius * (1.0 - rho**2) ** 2
        sx, sy = cx + dx * factor, cy + dy * factor
    else:  # shift: the texture pushed along one direction by amount * (1 - rho^2)^2, stretched <= 1.6x
        angle = rng.uniform(0, 2 * np.pi)
        push = amount * (1.0 - rho**2) ** 2
        sx, sy = xx - push * np.cos(angle), yy - push * np.sin(angle)
    paint = base.copy()
    for c in range(base.shape[2]):
        paint[y0:y1, x0:x1, c] = ndimage.map_coordinates(base[..., c], [sy, sx], order=1, mode="reflect")
    alpha = np.zeros((h, w), np.float32)
    alpha[y0:y1, x0:x1] = rho < 1.0
    return alpha, paint


def _region(rng: np.random.Generator, shape: Shape, count: int) -> np.ndarray:
    """(H,W) bool: exactly ``count`` pixels, a soft-edged large blob whose outline Perlin noise bends.

    Pixels are ranked by an elliptical Gaussian window around a random centre plus 0.3 x Perlin noise
    of about the blob's size (drawn at up to 1/4 resolution and zoomed bilinearly: it is smooth), and
    the top ``count`` pixels are the region.
    """
    height, width = shape
    radius = math.sqrt(count / math.pi)
    scale = 2 ** min(5, max(1, round(math.log2(max(height, width) / (1.5 * radius)))))
    shrink = int(min(4, max(1, max(height, width) / scale // 16)))  # smooth noise: drawn small, zoomed
    with torch.random.fork_rng(devices=[]):  # anomalib draws from torch's global generator
        torch.manual_seed(int(rng.integers(0, 2**31)))
        small = generate_perlin_noise(-(-height // shrink), -(-width // shrink), scale=(scale, scale),
                                      device=torch.device("cpu")).numpy()  # fmt: skip
    noise = ndimage.zoom(small, shrink, order=1)
    distance = _ellipse_distance(rng, shape, radius, centre=(0.25, 0.75), aspect=(0.6, 1.7))
    score = np.exp(-distance / 2.0) + 0.3 * noise[:height, :width]
    return score >= np.partition(score.ravel(), score.size - count)[score.size - count]


def _faint(
    base: np.ndarray, rng: np.random.Generator, donor: np.ndarray, area: tuple[float, float] = (0.03, 0.10)
) -> tuple[np.ndarray, np.ndarray]:
    """A faint large region (its area drawn log-uniformly in ``area``: 3-10% of the image unless a
    caller asks for another range): the texture slightly darker (75%) or lighter and of slightly lower
    contrast, the mean absolute change 4-8% of the region's mean brightness, fading to 40% of that over
    the outer 6 px. The mask is the whole region."""
    (h, w), s = base.shape[:2], _scale(base)
    n = h * w
    low, high = max(1, math.ceil(area[0] * n)), max(1, math.floor(area[1] * n))
    target = math.exp(rng.uniform(math.log(max(area[0], 1.0 / n)), math.log(max(area[1], 1.0 / n))))
    count = int(np.clip(round(target * n), low, high)) if low <= high else max(1, round(target * n))
    region = _region(rng, (h, w), min(count, n))
    sign = -1.0 if rng.random() < 0.75 else 1.0
    local = ndimage.gaussian_filter(base, sigma=(3.0 * s, 3.0 * s, 0), mode="reflect")
    direction = sign * base + rng.uniform(0.5, 2.0) * (local - base)  # brightness, then contrast
    inside = ndimage.distance_transform_edt(region)  # the image border is no edge
    profile = (0.4 + 0.6 * _smoothstep(inside / (6.0 * s)))[..., None]
    change = direction * profile
    size = np.abs(change[region]).mean() / max(float(base[region].mean()), 1e-6)
    strength = rng.uniform(0.04, 0.08) / max(float(size), 1e-6)
    return region.astype(np.float32), np.clip(base + strength * change, 0.0, 1.0)


DEFECT_KINDS: dict[str, Painter] = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "crack": _crack,
    "perlin": _perlin,
    "cutpaste": _cutpaste,
    "dent": _dent,
    "thread": _thread,
    "colour": _colour,
    "missing": _missing,
    # appended last: a kind's random stream in the transfer dataset is its position in this registry
    "burn": _burn,
    "warp": _warp,
    "faint": _faint,
}
#: Kinds whose mask is what an annotator would draw: it also covers pixels changed very little
#: (burn's halo, faint's fading edge) or not at all (warp's rim, where the texture barely moved).
ANNOTATED_KINDS: tuple[str, ...] = ("burn", "warp", "faint")
#: Mask area (fractions of the image) of the kinds that are not drawn in ``(MIN_AREA, MAX_AREA)``.
KIND_AREA: dict[str, tuple[float, float]] = {"faint": (0.03, 0.10)}
#: Kinds whose painter takes the area range to draw in (keyword ``area``) and meets it exactly.
_AREA_GUIDED = frozenset({"faint"})


def area_range(kind: str) -> tuple[float, float]:
    """The mask area range (fractions of the image) that ``kind`` is drawn in by the dataset generators."""
    return KIND_AREA.get(kind, (MIN_AREA, MAX_AREA))


def paint_float(
    base: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    donor: np.ndarray | None = None,
    area: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one ``kind`` defect on a float32 (H, W, 3) image in [0, 1]: (painted, mask bool).

    ``area`` bounds the mask's area (fractions of the image) and is binding: shapes are resampled
    until the mask falls in it. None means the kind's own range, ``area_range(kind)``, which is what
    the dataset generators draw. A caller's range (PGT's synthesis passes its own for every kind) only
    narrows what a kind draws: a kind whose painter takes a target area (``faint``) draws it in the
    part of the caller's range that overlaps its own range (in the caller's range if they do not
    overlap) and meets it exactly, so ``faint`` asked for (0.001, 0.04) covers 3-4% of the image and
    asked for (0.001, 0.02) at most 2%; every other kind draws its usual sizes (about 0.001-0.03)
    and is resampled, so a caller's range must overlap those. ``donor`` defaults to the image itself.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}: use one of {', '.join(DEFECT_KINDS)}")
    painter, own = DEFECT_KINDS[kind], area_range(kind)
    lo, hi = own if area is None else (float(area[0]), float(area[1]))
    guidance = {}
    if kind in _AREA_GUIDED:
        overlap = (max(lo, own[0]), min(hi, own[1]))
        guidance["area"] = overlap if overlap[0] <= overlap[1] else (lo, hi)
    for _ in range(_MAX_TRIES):
        alpha, paint = painter(base, rng, base if donor is None else donor, **guidance)
        mask = alpha > 0.5
        if lo <= mask.mean() <= hi:
            break
    else:
        raise RuntimeError(f"could not draw a {kind} defect within the area range in {_MAX_TRIES} tries")
    a = alpha[mask][:, None]
    out = base.copy()
    out[mask] = np.clip(base[mask] * (1 - a) + paint[mask] * a, 0.0, 1.0)
    return out, mask


def paint_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one ``kind`` defect on a uint8 (H, W, 3) image: (painted uint8, mask bool).

    Masked pixels are rounded to uint8; pixels outside the mask keep their bytes.
    """
    base = image.astype(np.float32) / 255.0
    donor_f = None if donor is None else donor.astype(np.float32) / 255.0
    painted, mask = paint_float(base, kind, rng, donor_f)
    out = image.copy()
    out[mask] = np.clip(np.rint(255.0 * painted[mask]), 0, 255).astype(np.uint8)
    return out, mask
