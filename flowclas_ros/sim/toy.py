"""A cheap procedural outdoor world for tests, CI and a quick demo.

Why this exists: the pybullet benchmark is slow and heavy; this renders a
plausible frame in about a millisecond with numpy + cv2 while still giving
frozen ImageNet features something real to separate: a sky gradient, a
perspective paving texture, and KNOWN inlier objects (green bollards, brown
crates) that appear in every split. Anomalies come from two disjoint cut-out
families: ``"oe"`` (noisy single-colour polygons, for outlier exposure in
training) and ``"test"`` (two-colour striped/checkered ellipses, stars and
rings, only ever in val/test frames), so a detector cannot pass by having
memorised its training outliers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from flowclas_ros.data.generic import write_sample
from flowclas_ros.data.outliers.cutouts import Cutout, paste_cutout, resize_cutout, save_cutout, trim_cutout

__all__ = [
    "CUTOUT_FAMILIES",
    "SPLITS",
    "make_cutout",
    "make_toy_cutout_bank",
    "make_toy_dataset",
    "render_inlier_scene",
]

PathLike = str | Path
Size = tuple[int, int]
Box = tuple[int, int, int, int]  # top, left, bottom, right (exclusive)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SEED_STREAMS = {"train": 0, "val": 1, "test": 2, "bank": 3}
_MIN_SIZE = 32
_CUTOUT_SIDE = (16, 48)  # longest side of a generated cut-out, px

# The camera is 1 world unit above flat ground; a ground row d px below the
# horizon is then at depth focal/d, where 1 world unit spans d px.
_HORIZON_FRACTION = (0.35, 0.50)


@dataclass
class _Scene:
    image: np.ndarray
    horizon: int  # first ground row
    vanish_x: float  # column of the vanishing point of the paving lines
    boxes: list[Box] = field(default_factory=list)  # occupied regions on the ground


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached float32 pixel-centre coordinates (rows, cols); read-only because shared."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + np.float32(0.5)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def _smooth_noise(rng: np.random.Generator, shape: Size, cells: Size) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a few random values, bicubically upsampled."""
    coarse = rng.random(cells, dtype=np.float32)
    return np.clip(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _check_size(size: Size) -> tuple[int, int]:
    height, width = int(size[0]), int(size[1])
    if height < _MIN_SIZE or width < _MIN_SIZE:
        raise ValueError(f"toy frames must be at least {_MIN_SIZE}x{_MIN_SIZE} (H, W), got {size}")
    return height, width


# ---------------------------------------------------------------- background


def _write_channels(out: np.ndarray, values: np.ndarray, gains: np.ndarray, offsets: np.ndarray) -> None:
    """out[..., c] = clip(values * gains[c] + offsets[c]), one channel at a time.

    Per-channel work keeps temporaries small (much faster than HxWx3 float arrays).
    """
    for c in range(3):
        out[..., c] = np.clip(values * gains[c] + offsets[c], 0, 255)


def _sky(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Blue-to-grey sky gradient with soft clouds into ``out``; returns the horizon haze colour."""
    rows, width = out.shape[:2]
    overcast = rng.uniform(0.0, 0.85)
    red = rng.uniform(35, 100)
    blue_top = np.array([red, red + rng.uniform(35, 65), rng.uniform(185, 240)], np.float32)
    grey_top = np.full(3, rng.uniform(135, 175), np.float32) + np.array([0, 3, 8], np.float32)
    top = (1 - overcast) * blue_top + overcast * grey_top
    haze = np.clip(top + rng.uniform(45, 85), 0, 245).astype(np.float32)
    t = (_grid(rows, 1)[0] / rows) ** 0.6  # (rows, 1)
    gradient = [top[c] + (haze[c] - top[c]) * t for c in range(3)]
    clouds = np.clip(_smooth_noise(rng, (rows, width), (3, 5)) - rng.uniform(0.35, 0.7), 0, None)
    cloud_colour = np.float32(rng.uniform(215, 250))
    weight = np.minimum(clouds * 2.5, 0.9)
    _write_channels(out, weight, [cloud_colour - g for g in gradient], gradient)
    return haze


def _soft_lines(coord: np.ndarray, footprint: np.ndarray, half_width: float) -> np.ndarray:
    """Anti-aliased grid lines at integer ``coord``; far lines fade to their mean coverage."""
    distance = np.abs(coord - np.round(coord))
    width = np.maximum(footprint, np.float32(half_width))
    return np.clip(1 - distance / width, 0, 1) * (np.float32(half_width) / width)


def _ground(rng: np.random.Generator, out: np.ndarray, vanish_x: float, haze: np.ndarray) -> None:
    """Perspective paving into ``out``: tiles (grid or running bond) with grout, dirt and haze."""
    rows, width = out.shape[:2]
    d = _grid(rows, 1)[0]  # (rows, 1): px below the horizon; everything depth-like is per row
    cols = _grid(1, width)[1]  # (1, width)
    tile = rng.uniform(0.3, 0.8)  # tile size in camera heights
    per_px = np.float32(1.0 / tile) / d  # texture units per px horizontally at this row
    v = np.float32(width) * per_px + np.float32(rng.random())  # depth in tiles
    iv = np.floor(v).astype(np.int32)
    bond = np.float32(0.5) * (iv & 1) if rng.random() < 0.5 else np.float32(0.0)  # running bond
    u = (cols - np.float32(vanish_x)) * per_px + (np.float32(rng.random()) + bond)
    footprint_v = v / d
    grout = np.maximum(_soft_lines(u, per_px, 0.05), _soft_lines(v, footprint_v, 0.05))
    tile_shades = rng.uniform(-1, 1, (32, 32)).astype(np.float32)
    tile_var = tile_shades[iv & 31, np.floor(u).astype(np.int32) & 31] * np.clip(1 - footprint_v, 0, 1)
    dirt = _smooth_noise(rng, (rows, width), (4, 6)) - np.float32(0.5)
    grain = rng.random((rows, width), dtype=np.float32) - np.float32(0.5)
    shade = 1 + 0.10 * tile_var + 0.25 * dirt + 0.17 * grain - 0.35 * grout
    brown = rng.uniform(0, 1)
    base = (1 - brown) * np.array([122, 122, 118], np.float32) + brown * np.array([138, 110, 82], np.float32)
    base *= np.float32(rng.uniform(0.7, 1.2))
    fog = 0.75 * np.exp(-d / np.float32(0.12 * rows))  # (rows, 1): haze towards the horizon
    _write_channels(out, shade, [b * (1 - fog) for b in base], [h * fog for h in haze])


# ---------------------------------------------------------------- known objects


def _shade(colour: np.ndarray, factor: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(colour * factor, 0, 255))


def _cast_shadow(image: np.ndarray, centre: tuple[float, float], axes: tuple[float, float]) -> None:
    """Darken an ellipse on the ground under an object (drawn in a local window, for speed)."""
    ax, ay = max(1, round(axes[0])), max(1, round(axes[1]))
    cx, cy = round(centre[0]), round(centre[1])
    top, left = max(0, cy - ay), max(0, cx - ax)
    window = image[top:cy + ay + 1, left:cx + ax + 1]
    if window.size == 0:
        return
    mask = np.zeros(window.shape[:2], np.uint8)
    cv2.ellipse(mask, (cx - left, cy - top), (ax, ay), 0, 0, 360, 1, -1)
    window[mask > 0] = (window[mask > 0] * 0.55).astype(np.uint8)


def _draw_bollard(image: np.ndarray, x: float, bottom: float, scale: float, rng: np.random.Generator) -> Box:
    """A dark-green cylinder with Lambert shading, a reflective band and a lit cap."""
    radius, height = max(1.5, 0.08 * scale), max(4.0, 0.6 * scale)
    colour = np.array([38, 88, 46], np.float32) * rng.uniform(0.8, 1.2)
    _cast_shadow(image, (x + 0.9 * radius, bottom), (2.2 * radius, 0.5 * radius))
    x0, x1 = max(0, round(x - radius)), min(image.shape[1], round(x + radius) + 1)
    top, y1 = max(0, round(bottom - height)), min(image.shape[0], round(bottom))
    if x1 <= x0 or y1 <= top:
        return (top, x0, y1, x1)
    t = np.clip((np.arange(x0, x1, dtype=np.float32) + 0.5 - x) / radius, -1, 1)
    light = 0.25 + 0.75 * np.clip(-0.55 * t + 0.83 * np.sqrt(1 - t * t), 0, 1)
    image[top:y1, x0:x1] = np.clip(colour * light[:, None], 0, 255).astype(np.uint8)
    band0, band1 = round(bottom - 0.85 * height), round(bottom - 0.75 * height)
    image[max(0, band0):max(0, band1), x0:x1] = np.clip(np.float32(215) * light[:, None], 0, 255).astype(np.uint8)
    cv2.ellipse(image, (round(x), round(bottom - height)), (max(1, round(radius)), max(1, round(0.35 * radius))),
                0, 0, 360, _shade(colour, 1.5), -1, cv2.LINE_AA)
    return (top, x0, y1, x1)


def _toward(point: tuple[float, float], target: tuple[float, float], k: float) -> tuple[float, float]:
    return (point[0] + (target[0] - point[0]) * k, point[1] + (target[1] - point[1]) * k)


def _fill(image: np.ndarray, points: list[tuple[float, float]], colour: tuple[float, float, float]) -> None:
    cv2.fillPoly(image, [np.round(np.array(points)).astype(np.int32)], colour, cv2.LINE_AA)


def _draw_crate(image: np.ndarray, x: float, bottom: float, scale: float, scene: _Scene,
                rng: np.random.Generator) -> Box:
    """A brown slatted box in perspective: top and inner side recede to the vanishing point."""
    half_w = max(2.0, 0.22 * scale * rng.uniform(0.8, 1.3))
    height = max(3.0, 0.3 * scale * rng.uniform(0.8, 1.2))
    colour = np.array([140, 96, 56], np.float32) * rng.uniform(0.8, 1.15)
    _cast_shadow(image, (x + half_w * 0.5, bottom), (1.4 * half_w, 0.35 * half_w))
    left, right, top = x - half_w, x + half_w, bottom - height
    vanish = (scene.vanish_x, float(scene.horizon))
    depth = 0.45  # world units; recession fraction = depth / (distance + depth)
    k = depth * scale / (image.shape[1] + depth * scale)
    side_x = right if x < scene.vanish_x else left
    _fill(image, [(side_x, top), (side_x, bottom), _toward((side_x, bottom), vanish, k),
                  _toward((side_x, top), vanish, k)], _shade(colour, 0.6))
    back_left, back_right = _toward((left, top), vanish, k), _toward((right, top), vanish, k)
    _fill(image, [(left, top), (right, top), back_right, back_left], _shade(colour, 1.3))
    _fill(image, [(left, top), (right, top), (right, bottom), (left, bottom)], _shade(colour, 1.0))
    slat = max(1, round(height / 14))
    for frac in (1 / 3, 2 / 3):
        y = round(top + frac * height)
        cv2.line(image, (round(left), y), (round(right), y), _shade(colour, 0.6), slat)
    cv2.rectangle(image, (round(left), round(top)), (round(right), round(bottom)), _shade(colour, 0.5), 1)
    y0 = round(min(top, back_left[1]))
    x0, x1 = round(min(left, back_left[0])), round(max(right, back_right[0])) + 1
    return (max(0, y0), max(0, x0), round(bottom), x1)


def _draw_known_objects(scene: _Scene, rng: np.random.Generator) -> None:
    """0-3 bollards/crates standing on the ground, far ones first so near ones occlude."""
    height, width = scene.image.shape[:2]
    rows = height - scene.horizon
    count = int(rng.integers(0, 4))
    bottoms = np.sort(rng.uniform(scene.horizon + 0.15 * rows, height - 1, count))
    for bottom in bottoms:
        x = rng.uniform(0.05, 0.95) * width
        scale = bottom - scene.horizon  # px per world unit at this ground row
        if rng.random() < 0.5:
            box = _draw_bollard(scene.image, x, bottom, scale, rng)
        else:
            box = _draw_crate(scene.image, x, bottom, scale, scene, rng)
        scene.boxes.append(box)


def _render_scene(rng: np.random.Generator, size: Size) -> _Scene:
    height, width = _check_size(size)
    horizon = int(round(rng.uniform(*_HORIZON_FRACTION) * height))
    vanish_x = width * rng.uniform(0.3, 0.7)
    image = np.empty((height, width, 3), np.uint8)
    haze = _sky(rng, image[:horizon])
    _ground(rng, image[horizon:], vanish_x, haze)
    scene = _Scene(image, horizon, vanish_x)
    _draw_known_objects(scene, rng)
    return scene


def render_inlier_scene(rng: np.random.Generator, size: Size = (120, 160)) -> np.ndarray:
    """Render one anomaly-free frame (HxWx3 uint8 RGB); ``size`` is (H, W)."""
    return _render_scene(rng, size).image


# ---------------------------------------------------------------- cut-out families


def _fit_points(points: np.ndarray, long_side: int) -> tuple[np.ndarray, Size]:
    """Scale/shift polygon points so their bounding box's longest side is ``long_side`` px."""
    points = points - points.min(axis=0)
    points = points * ((long_side - 1) / points.max())
    shape = (int(np.ceil(points[:, 1].max())) + 1, int(np.ceil(points[:, 0].max())) + 1)
    return np.round(points).astype(np.int32), shape


def _polygon_mask(points: np.ndarray, long_side: int) -> np.ndarray:
    fitted, shape = _fit_points(points, long_side)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [fitted], 1)
    return mask > 0


def _radial_points(radii: np.ndarray, angles: np.ndarray, aspect: float) -> np.ndarray:
    return np.stack([np.cos(angles) * radii * aspect, np.sin(angles) * radii], axis=1)


def _oe_cutout(rng: np.random.Generator, long_side: int) -> Cutout:
    """Random star-convex polygon, one saturated colour with blotchy noise texture."""
    n = int(rng.integers(3, 10))
    step = 2 * np.pi / n  # jittered even spacing: irregular, but never a degenerate sliver
    angles = np.arange(n) * step + rng.uniform(-0.4, 0.4, n) * step + rng.uniform(0, 2 * np.pi)
    points = _radial_points(rng.uniform(0.5, 1.0, n), angles, rng.uniform(0.5, 1.0))
    mask = _polygon_mask(points, long_side)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(170, 256), rng.integers(140, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    blotches = _smooth_noise(rng, mask.shape, (3, 3)) - np.float32(0.5)
    grain = rng.normal(0, 14, (*mask.shape, 3)).astype(np.float32)
    rgb = colour * (1 + 0.5 * blotches)[..., None] + grain
    return trim_cutout(Cutout(np.clip(rgb, 0, 255).astype(np.uint8), mask))


# Saturated or extreme colours that occur nowhere in the toy scene.
_TEST_PALETTE = np.array(
    [[235, 25, 35], [250, 225, 20], [240, 40, 210], [20, 225, 235], [250, 130, 10], [250, 250, 250],
     [15, 15, 15], [125, 30, 235]],
    np.uint8,
)


def _test_mask(rng: np.random.Generator, long_side: int) -> np.ndarray:
    """An ellipse, a star or a ring (a disc with a hole)."""
    kind = int(rng.integers(3))
    aspect = rng.uniform(0.55, 1.0)
    if kind == 1:  # star
        n = int(rng.integers(5, 8))
        radii = np.tile([1.0, rng.uniform(0.4, 0.55)], n)
        angles = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
        return _polygon_mask(_radial_points(radii, angles, 1.0), long_side)
    if kind == 2:
        aspect = 1.0  # rings stay round so the hole stays visible
    ellipse = _polygon_mask(_radial_points(np.ones(48), np.linspace(0, 2 * np.pi, 48, endpoint=False), aspect),
                            long_side)
    if kind == 2:
        h, w = ellipse.shape
        hole = np.zeros((h, w), np.uint8)
        cv2.circle(hole, (w // 2, h // 2), max(1, round(rng.uniform(0.25, 0.35) * min(h, w))), 1, -1)
        ellipse &= hole == 0
    return ellipse


def _test_pattern(rng: np.random.Generator, shape: Size) -> np.ndarray:
    """Boolean stripes (random angle/period) or a checkerboard."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    cols = np.arange(shape[1], dtype=np.float32)[None, :]
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * cols + np.sin(angle) * rows) / rng.uniform(3, 7)
        return (np.floor(phase).astype(np.int32) & 1) == 1
    cell = rng.uniform(3, 7)
    return ((np.floor(rows / cell) + np.floor(cols / cell)).astype(np.int32) & 1) == 1


def _test_cutout(rng: np.random.Generator, long_side: int) -> Cutout:
    """Two-colour striped or checkered ellipse/star/ring, in colours foreign to the scene."""
    mask = _test_mask(rng, long_side)
    first, second = rng.choice(len(_TEST_PALETTE), size=2, replace=False)
    rgb = np.where(_test_pattern(rng, mask.shape)[..., None], _TEST_PALETTE[first], _TEST_PALETTE[second])
    return trim_cutout(Cutout(rgb.astype(np.uint8), mask))


_FAMILIES: dict[str, Callable[[np.random.Generator, int], Cutout]] = {"oe": _oe_cutout, "test": _test_cutout}
CUTOUT_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def make_cutout(rng: np.random.Generator, family: str) -> Cutout:
    """A synthetic object 16-48 px long; ``"oe"`` for training, ``"test"`` for evaluation only."""
    try:
        maker = _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown cut-out family {family!r}; expected one of {CUTOUT_FAMILIES}") from None
    return maker(rng, int(rng.integers(_CUTOUT_SIDE[0], _CUTOUT_SIDE[1] + 1)))


# ---------------------------------------------------------------- datasets


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_on_ground(scene: _Scene, cutout: Cutout, rng: np.random.Generator) -> tuple[Cutout, tuple[int, int]]:
    """Stand a cut-out on the ground, sized by distance, avoiding objects already there."""
    height, width = scene.image.shape[:2]
    rows = height - scene.horizon
    size_scale = min(height, width) / 120.0
    for _attempt in range(20):
        bottom = int(rng.integers(scene.horizon + int(0.35 * rows), height + 1))
        nearness = (bottom - scene.horizon) / rows
        long_side = max(cutout.mask.shape) * size_scale * (0.6 + 0.5 * nearness)
        placed = resize_cutout(cutout, long_side, (bottom - scene.horizon, width))
        h, w = placed.mask.shape
        left = int(rng.integers(width - w + 1))
        box = (bottom - h, left, bottom, left + w)
        if not any(_overlaps(box, other) for other in scene.boxes):
            break
    scene.boxes.append(box)
    return placed, (box[0], box[1])


def _frame_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, split, frame)."""
    return np.random.default_rng([seed, _SEED_STREAMS[stream], index])


def _toy_frame(rng: np.random.Generator, split: str, size: Size) -> tuple[np.ndarray, np.ndarray]:
    scene = _render_scene(rng, size)
    label = np.zeros(scene.image.shape[:2], np.uint8)
    if split != "train":
        for _ in range(int(rng.integers(1, 3))):
            cutout, top_left = _place_on_ground(scene, make_cutout(rng, "test"), rng)
            paste_cutout(scene.image, label, cutout, top_left)
    return scene.image, label


def make_toy_dataset(root: PathLike, split: str, n: int, seed: int = 0, size: Size = (120, 160)) -> list[str]:
    """Write ``n`` frames in the generic layout: train is inlier-only, val/test get 1-2 anomalies."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ids = []
    for index in range(n):
        image, label = _toy_frame(_frame_rng(seed, split, index), split, size)
        sample_id = f"{split}_{index:05d}"
        write_sample(root, sample_id, image, label)
        ids.append(sample_id)
    return ids


def make_toy_cutout_bank(root: PathLike, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` ``"oe"``-family cut-outs as RGBA PNGs for outlier exposure."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    paths = []
    for index in range(n):
        path = Path(root) / f"oe_{index:05d}.png"
        save_cutout(path, make_cutout(_frame_rng(seed, "bank", index), "oe"))
        paths.append(path)
    return paths
