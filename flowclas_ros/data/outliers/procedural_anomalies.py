"""Procedural anomalies (CL-flow style outlier exposure): no external object set needed.

Why this exists: FlowCLAS trains its contrastive term on pasted anomalies, but a spacecraft or a
factory line has no object set to paste from. CL-flow (and DRAEM before it) synthesise anomalies
from the image itself: a noise-shaped mask, filled with something the inlier distribution does not
contain. This module does that with numpy + OpenCV only, deterministically given an
``np.random.Generator``:

- **mask**: fractal gradient (Perlin) noise over a box whose longest side is ``scale`` x the shorter
  image side, plus an elliptical fall-off towards the box border, thresholded at the exact
  quantile that makes the blob cover ``coverage`` of its box (``blob_mask``: exactly
  ``round(coverage * box area)`` pixels). The shapes are irregular, noise-bounded regions
  (mostly one body, sometimes with small satellites), not the convex polygons of cut-outs;
- **fill**, one kind per blob, drawn with the ``fills`` weights:

  * ``texture``: a foreign procedural texture (stripes, checkerboard, two-colour fractal noise or
    a colour gradient, in random colours), see :func:`foreign_texture`;
  * ``colour``: a colour distortion of the image itself under the mask (hue rotation,
    saturation/brightness jump, inversion), see :func:`colour_distortion`;
  * ``geometry``: a geometric distortion of another patch of the same image (mirrored, rotated or
    tile-shuffled), see :func:`geometric_distortion`;

  composited with an opacity drawn from ``opacity`` (1 = opaque).

Label contract (the same as :func:`flowclas_ros.data.outliers.paste_outliers`): new arrays are
returned, and the pasted pixels are labelled 1 (anomaly), overriding inlier and void labels.
Stronger than for cut-outs: **every pixel labelled by this function differs from the input image
by at least ``min_change`` grey levels in some channel, and no other pixel changes**, so for an
input label free of anomalies, ``label == 1`` is exactly the set of changed pixels. Why it needs
enforcing: a fill can map a pixel onto itself or nearly so (hue rotation of a grey pixel, a
brightness jump of a saturated white one, a mirrored patch of uniform sky, a low-opacity blend, a
foreign colour that happens to match). Such pixels are not anomalous to anyone and would teach
the contrastive loss that inlier-looking pixels are anomalies, so they get a fallback change:
each channel moves by exactly ``min_change`` away from the nearer end of [0, 255]
(``v + d`` for ``v < 128``, ``v - d`` otherwise), which always lands in range and always
changes the pixel. The check runs once, against the ORIGINAL image, after all blobs of a frame,
so overlapping blobs cannot restore a pixel to its input value unnoticed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import cv2
import numpy as np

from flowclas_ros.data.outliers.cutouts import SIZE_SAMPLINGS, as_pair, draw_scale, kind_weights, start_paste
from flowclas_ros.runtime.labels import ANOMALY

__all__ = [
    "COLOUR_OPS",
    "FILL_KINDS",
    "GEOMETRY_OPS",
    "TEXTURE_KINDS",
    "ProceduralConfig",
    "blob_mask",
    "colour_distortion",
    "foreign_texture",
    "fractal_noise",
    "geometric_distortion",
    "gradient_noise",
    "paste_procedural",
]

FILL_KINDS: tuple[str, ...] = ("texture", "colour", "geometry")
TEXTURE_KINDS: tuple[str, ...] = ("stripes", "checker", "noise", "gradient")
COLOUR_OPS: tuple[str, ...] = ("hue", "saturation_value", "invert")
GEOMETRY_OPS: tuple[str, ...] = ("mirror", "rotate", "shuffle")

Shape = tuple[int, int]


# ---------------------------------------------------------------- noise


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade 6t^5 - 15t^4 + 10t^3 (C2-continuous lattice interpolation)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _lattice(n_pixels: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell index and the fractional position in it of each pixel centre."""
    pos = (np.arange(n_pixels, dtype=np.float64) + 0.5) * (n_cells / n_pixels)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_cells - 1)
    return i0, pos - i0


def gradient_noise(shape: Shape, cells: Shape, rng: np.random.Generator) -> np.ndarray:
    """2D gradient (Perlin) noise, float32 in about [-1, 1], with ``cells`` (rows, cols) lattice
    cells across the array: random unit gradients at the lattice corners, dot products with the
    offsets to each pixel, quintic interpolation."""
    h, w = int(shape[0]), int(shape[1])
    cy, cx = max(1, int(cells[0])), max(1, int(cells[1]))
    theta = rng.uniform(0.0, 2.0 * np.pi, (cy + 1, cx + 1))
    gy, gx = np.sin(theta).astype(np.float32), np.cos(theta).astype(np.float32)
    y0, ty = _lattice(h, cy)
    x0, tx = _lattice(w, cx)
    ty, tx = ty.astype(np.float32), tx.astype(np.float32)

    def corner(dy: int, dx: int) -> np.ndarray:
        rows, cols = y0 + dy, x0 + dx
        return (gy[rows][:, cols] * (ty - dy)[:, None]) + (gx[rows][:, cols] * (tx - dx)[None, :])

    u, v = _fade(tx)[None, :], _fade(ty)[:, None]
    c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    top = c00 + u * (c01 - c00)
    bottom = c10 + u * (c11 - c10)
    return (top + v * (bottom - top)) * np.float32(math.sqrt(2.0))


def fractal_noise(shape: Shape, rng: np.random.Generator, cells: Shape = (2, 2), octaves: int = 4,
                  persistence: float = 0.5) -> np.ndarray:
    """Fractal Brownian motion of gradient noise: ``octaves`` layers, lattice doubling and
    amplitude x ``persistence`` per octave (lattice capped at one cell per pixel); float32,
    normalised by the total amplitude (about [-1, 1])."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(int(octaves)):
        k = 2 ** octave
        lattice = (min(h, max(1, int(cells[0])) * k), min(w, max(1, int(cells[1])) * k))
        out += np.float32(amplitude) * gradient_noise((h, w), lattice, rng)
        total += amplitude
        amplitude *= persistence
    return out / np.float32(total)


def blob_mask(shape: Shape, coverage: float, rng: np.random.Generator, octaves: int = 4,
              frequency: tuple[int, int] = (2, 5), falloff: float = 2.5) -> np.ndarray:
    """A noise-shaped blob: bool ``shape`` mask with exactly ``round(coverage * area)`` pixels
    (at least 1), the top pixels of ``fractal noise / std - falloff * r^2`` where ``r`` is the
    elliptical distance to the box centre (1 on the inscribed ellipse); the fall-off keeps the
    blob compact and away from the box corners, the noise makes its border irregular."""
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"blob_mask: shape must be positive, got {shape}")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"blob_mask: coverage must be in (0, 1], got {coverage!r}")
    base = int(rng.integers(frequency[0], frequency[1] + 1))
    aspect = w / h
    cells = (max(1, round(base / math.sqrt(aspect))), max(1, round(base * math.sqrt(aspect))))
    noise = fractal_noise((h, w), rng, cells, octaves)
    noise = noise / np.float32(max(float(noise.std()), 1e-6))
    ry = ((np.arange(h, dtype=np.float32) + 0.5) / h - 0.5) * 2.0
    rx = ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * 2.0
    score = noise - np.float32(falloff) * (ry[:, None] ** 2 + rx[None, :] ** 2)
    k = min(h * w, max(1, round(coverage * h * w)))
    flat = np.zeros(h * w, bool)
    flat[np.argpartition(-score.ravel(), k - 1)[:k]] = True
    return flat.reshape(h, w)


# ---------------------------------------------------------------- fills


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random RGB colours, float32 [n, 3], at least 64 levels apart (L-inf) pairwise when n=2,
    so a two-colour texture is never uniform."""
    colours = rng.integers(0, 256, (n, 3)).astype(np.float32)
    if n == 2 and np.abs(colours[0] - colours[1]).max() < 64:
        c = int(rng.integers(3))
        colours[1, c] = colours[0, c] + 128 if colours[0, c] < 128 else colours[0, c] - 128
    return colours


def foreign_texture(shape: Shape, rng: np.random.Generator, kind: Optional[str] = None) -> np.ndarray:
    """A procedural texture in random colours, uint8 (h, w, 3): ``stripes`` (random angle and
    period), ``checker`` (random cell size), ``noise`` (fractal noise between two colours) or
    ``gradient`` (linear ramp between two colours in a random direction)."""
    h, w = int(shape[0]), int(shape[1])
    if kind is None:
        kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {TEXTURE_KINDS}")
    a, b = _random_colours(rng, 2)
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(w, dtype=np.float32)[None, :] + 0.5
    side = max(h, w)
    if kind == "stripes":
        angle = rng.uniform(0.0, np.pi)
        period = max(2.0, rng.uniform(0.05, 0.3) * side)
        phase = (np.cos(angle) * cols + np.sin(angle) * rows) / period + rng.random()
        t = (np.floor(2.0 * phase).astype(np.int64) & 1).astype(np.float32)
    elif kind == "checker":
        cell = max(1.0, rng.uniform(0.05, 0.25) * side)
        oy, ox = rng.uniform(0, cell, 2)
        t = ((np.floor((rows + oy) / cell) + np.floor((cols + ox) / cell)).astype(np.int64) & 1)
        t = t.astype(np.float32)
    elif kind == "noise":
        n = fractal_noise((h, w), rng, (int(rng.integers(2, 6)),) * 2, octaves=4)
        lo, hi = float(n.min()), float(n.max())
        t = (n - lo) / (hi - lo) if hi > lo else np.zeros((h, w), np.float32)
    else:  # gradient
        angle = rng.uniform(0.0, 2.0 * np.pi)
        proj = np.cos(angle) * cols / w + np.sin(angle) * rows / h
        lo, hi = float(proj.min()), float(proj.max())
        t = (proj - lo) / (hi - lo) if hi > lo else np.zeros((h, w), np.float32)
    t = np.broadcast_to(t, (h, w))[..., None]
    return np.clip(np.rint(a + (b - a) * t), 0, 255).astype(np.uint8)


def colour_distortion(region: np.ndarray, rng: np.random.Generator, op: Optional[str] = None) -> np.ndarray:
    """A colour distortion of ``region`` (uint8 RGB), same shape: ``hue`` (rotate the hue by 60-300
    degrees), ``saturation_value`` (saturation and brightness jump: each scaled down to 0.1-0.5 or
    up to 1.6-3x) or ``invert`` (255 - v)."""
    if op is None:
        op = COLOUR_OPS[int(rng.integers(len(COLOUR_OPS)))]
    if op not in COLOUR_OPS:
        raise ValueError(f"unknown colour op {op!r}; expected one of {COLOUR_OPS}")
    region = np.ascontiguousarray(region)
    if op == "invert":
        return 255 - region
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)  # H in 0..255
    if op == "hue":
        shift = rng.uniform(60.0, 300.0) / 360.0 * 256.0
        hsv[..., 0] = np.mod(hsv[..., 0] + shift, 256.0)
    else:
        for c in (1, 2):
            factor = rng.uniform(0.1, 0.5) if rng.random() < 0.5 else rng.uniform(1.6, 3.0)
            hsv[..., c] = hsv[..., c] * factor + (0.0 if factor < 1 else rng.uniform(20.0, 60.0))
    hsv = np.clip(np.rint(hsv), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def _shuffle_tiles(patch: np.ndarray, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Cut ``patch`` (exactly divisible by ``grid``) into grid x grid tiles, permute them
    (never the identity)."""
    h, w = patch.shape[:2]
    th, tw = h // grid, w // grid
    tiles = [patch[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(grid) for c in range(grid)]
    perm = rng.permutation(len(tiles))
    if np.array_equal(perm, np.arange(len(tiles))):
        perm = np.roll(perm, 1)
    rows = [np.concatenate([tiles[perm[r * grid + c]] for c in range(grid)], axis=1) for r in range(grid)]
    return np.concatenate(rows, axis=0)


def geometric_distortion(image: np.ndarray, shape: Shape, rng: np.random.Generator,
                         op: Optional[str] = None) -> np.ndarray:
    """A ``shape`` (h, w) patch taken from a random place of ``image`` and distorted: ``mirror``
    (left-right or up-down), ``rotate`` (90, 180 or 270 degrees, resized back to ``shape``) or
    ``shuffle`` (2x2..4x4 tiles permuted); uint8 (h, w, 3)."""
    if op is None:
        op = GEOMETRY_OPS[int(rng.integers(len(GEOMETRY_OPS)))]
    if op not in GEOMETRY_OPS:
        raise ValueError(f"unknown geometry op {op!r}; expected one of {GEOMETRY_OPS}")
    height, width = image.shape[:2]
    h, w = int(shape[0]), int(shape[1])
    if op == "shuffle":
        grid = int(rng.integers(2, 5))
        ph, pw = grid * math.ceil(h / grid), grid * math.ceil(w / grid)
    else:
        ph, pw = h, w
    src = image
    if ph > height or pw > width:  # a patch as large as the frame: reflect-pad to fit
        src = np.pad(image, ((0, max(0, ph - height)), (0, max(0, pw - width)), (0, 0)), mode="reflect")
    top = int(rng.integers(src.shape[0] - ph + 1))
    left = int(rng.integers(src.shape[1] - pw + 1))
    patch = src[top:top + ph, left:left + pw]
    if op == "mirror":
        return np.ascontiguousarray(patch[:, ::-1] if rng.random() < 0.5 else patch[::-1])
    if op == "rotate":
        turns = int(rng.integers(1, 4))
        rotated = np.ascontiguousarray(np.rot90(patch, turns))
        if rotated.shape[:2] != (h, w):
            rotated = cv2.resize(rotated, (w, h), interpolation=cv2.INTER_LINEAR)
        return rotated
    return np.ascontiguousarray(_shuffle_tiles(patch, grid, rng)[:h, :w])


# ---------------------------------------------------------------- config and paste


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ProceduralConfig:
    """How procedural anomalies are pasted.

    ``probability``: chance that a frame gets any; ``count``: inclusive range of blobs per pasted
    frame; ``scale``: range of a blob box's longest side as a fraction of the image's shorter side
    (the cut-outs' convention); ``coverage``: range of the fraction of its box a blob covers (its
    exact area, see :func:`blob_mask`); ``opacity``: range of the fill's blend weight (1 = opaque);
    ``min_change``: grey levels every labelled pixel differs by, at least (see the module
    docstring); ``octaves`` / ``frequency``: fractal-noise octaves and base lattice cells across a
    box; ``fills``: weight of each fill kind (``texture``, ``colour``, ``geometry``; 0 = off; a
    mapping, stored as a tuple of pairs so the config stays hashable).
    """

    probability: float = 0.5
    count: tuple[int, int] = (1, 2)
    scale: tuple[float, float] = (0.1, 0.4)
    coverage: tuple[float, float] = (0.3, 0.7)
    opacity: tuple[float, float] = (0.7, 1.0)
    min_change: int = 32
    octaves: int = 4
    frequency: tuple[int, int] = (2, 5)
    fills: Mapping[str, float] | tuple = (("texture", 1.0), ("colour", 1.0), ("geometry", 1.0))
    size_sampling: str = "uniform"  # or log_uniform (data.outliers.cutouts.draw_scale)

    def __post_init__(self) -> None:
        if isinstance(self.probability, bool) or not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"ProceduralConfig.probability must be in [0, 1], got {self.probability!r}")
        count = as_pair(self.count, "ProceduralConfig.count")
        if not all(_is_int(c) for c in count) or not 1 <= count[0] <= count[1]:
            raise ValueError(f"ProceduralConfig.count must be integers with 1 <= low <= high, got {self.count!r}")
        ranges = {}
        for name in ("scale", "coverage", "opacity"):
            lo, hi = as_pair(getattr(self, name), f"ProceduralConfig.{name}")
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"ProceduralConfig.{name} must satisfy 0 < low <= high <= 1, "
                                 f"got {getattr(self, name)!r}")
            ranges[name] = (float(lo), float(hi))
        if self.size_sampling not in SIZE_SAMPLINGS:
            raise ValueError(f"ProceduralConfig.size_sampling must be one of {SIZE_SAMPLINGS}, "
                             f"got {self.size_sampling!r}")
        if not _is_int(self.min_change) or not 1 <= self.min_change <= 128:
            raise ValueError(f"ProceduralConfig.min_change must be an integer in 1..128, got {self.min_change!r}")
        if not _is_int(self.octaves) or not 1 <= self.octaves <= 8:
            raise ValueError(f"ProceduralConfig.octaves must be an integer in 1..8, got {self.octaves!r}")
        freq = as_pair(self.frequency, "ProceduralConfig.frequency")
        if not all(_is_int(f) for f in freq) or not 1 <= freq[0] <= freq[1]:
            raise ValueError(f"ProceduralConfig.frequency must be integers with 1 <= low <= high, "
                             f"got {self.frequency!r}")
        weights = kind_weights(self.fills, FILL_KINDS, "ProceduralConfig.fills")
        object.__setattr__(self, "count", (int(count[0]), int(count[1])))
        for name, pair in ranges.items():
            object.__setattr__(self, name, pair)
        object.__setattr__(self, "frequency", (int(freq[0]), int(freq[1])))
        object.__setattr__(self, "min_change", int(self.min_change))
        object.__setattr__(self, "octaves", int(self.octaves))
        object.__setattr__(self, "fills", weights)

    @property
    def fill_probabilities(self) -> np.ndarray:
        w = np.array([v for _, v in self.fills], np.float64)
        return w / w.sum()


def _fill(kind: str, out: np.ndarray, original: np.ndarray, box: tuple[slice, slice],
          shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if kind == "texture":
        return foreign_texture(shape, rng)
    if kind == "colour":
        return colour_distortion(out[box], rng)
    return geometric_distortion(original, shape, rng)


def paste_procedural(image: np.ndarray, label: Optional[np.ndarray], cfg: ProceduralConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """With probability ``cfg.probability`` paste ``cfg.count`` procedural anomalies; returns new
    (image, label, pasted). Pasted pixels are labelled 1 and each differs from ``image`` by at
    least ``cfg.min_change`` levels in some channel; no other pixel changes (module docstring)."""
    out, out_label, go = start_paste(image, label, cfg.probability, rng)
    if not go:
        return out, out_label, False
    height, width = image.shape[:2]
    union = np.zeros((height, width), bool)
    y_lo, x_lo, y_hi, x_hi = height, width, 0, 0  # bounding box of all blobs
    probs = cfg.fill_probabilities
    for _ in range(int(rng.integers(cfg.count[0], cfg.count[1] + 1))):
        long_side = draw_scale(rng, cfg.scale, cfg.size_sampling) * min(height, width)
        short_side = long_side * rng.uniform(0.5, 1.0)
        hw = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
        h = int(min(height, max(2, round(hw[0]))))
        w = int(min(width, max(2, round(hw[1]))))
        mask = blob_mask((h, w), rng.uniform(*cfg.coverage), rng, cfg.octaves, cfg.frequency)
        top, left = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        box = (slice(top, top + h), slice(left, left + w))
        kind = FILL_KINDS[int(rng.choice(len(FILL_KINDS), p=probs))]
        fill = _fill(kind, out, image, box, (h, w), rng).astype(np.float32)
        alpha = np.float32(rng.uniform(*cfg.opacity))
        blended = np.rint(alpha * fill + (1 - alpha) * out[box].astype(np.float32))
        out[box][mask] = np.clip(blended, 0, 255).astype(np.uint8)[mask]
        union[box] |= mask
        y_lo, x_lo, y_hi, x_hi = min(y_lo, top), min(x_lo, left), max(y_hi, top + h), max(x_hi, left + w)
    # Enforce the label contract against the original image (see the module docstring).
    roi = (slice(y_lo, y_hi), slice(x_lo, x_hi))
    d = np.uint8(cfg.min_change)
    change = np.abs(out[roi].astype(np.int16) - image[roi].astype(np.int16)).max(axis=2)
    weak = union[roi] & (change < cfg.min_change)
    if weak.any():
        src = image[roi][weak]
        out[roi][weak] = np.where(src < 128, src + d, src - d)
    out_label[union] = ANOMALY
    return out, out_label, True
