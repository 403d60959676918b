"""Depth region evidence: the anomaly score spread over whole objects that stand on the ground.

Why: the flow scores each cell from its local appearance, so a plain solid in the walls' colours
reads as wall; a few of its cells, or its outline, are flagged and its face is not. Colour cannot
separate that face from the wall behind it; an aligned depth image can: the face is a surface of
its own, standing on the ground in front of the wall. With depth (metres, NaN or <= 0 = no reading)
and the colour camera's intrinsics, the stage

1. back-projects every ``stride``-th pixel and fits the ground plane: seeded RANSAC over the lower
   two thirds of the frame (the plane must face the camera's "up"), refined by least squares. No
   plane (too few readings, no upward-facing plane) leaves the score unchanged (``reason`` says why);
2. takes the pixels more than ``min_height`` above that plane, cuts them wherever depth jumps
   (``jump_rel`` of the nearer depth + ``jump_abs``; the far side of the jump loses the pixel,
   the occluding near surface keeps its outline) and splits them into 4-connected segments; a
   hole in the depth image is neither ground nor object, so it never joins two segments;
3. keeps the segments shaped like an object on the ground: at least ``min_px`` pixels (full
   resolution), lowest points within ``contact_height`` of the plane, top below ``max_top``, extent
   along the ground below ``max_extent``, median range below ``max_range``, and not reaching the
   frame's top border (its size is then unknown: a wall, a building);
4. lifts each kept segment's pixels to ``max(score, quantile(score over the segment, q))``.

It spreads evidence the flow already has over the object that evidence belongs to; it invents
none. An inlier object (a table) is a segment too, but its scores are low, so its quantile is low
and nothing is flagged; a wall is not a segment (too large, or it reaches the top border); the
floor is the plane. The settings travel in the model file (ONNX metadata ``depth_regions``,
written by ``flowclas-ros regions --depth``), so the node, replay and the evaluator run the stage
a model was measured with, on every frame that comes with depth. The work is bounded: at most
``MAX_SEGMENTS`` segments (the largest) are examined, and RANSAC's samples are fixed in number.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import cv2
import numpy as np

from flowclas_ros.runtime.obstacles3d import CameraIntrinsics
from flowclas_ros.runtime.stage_settings import carried, checked_mapping, parse_json

DEPTH_REGIONS_KEY = "depth_regions"  # ONNX metadata key holding the stage's settings (JSON)
MAX_SEGMENTS = 64  # segments examined per frame, largest first (bounds the work)
RANSAC_POINTS = 4000  # ground candidates sampled per frame
RANSAC_ITERATIONS = 150
MIN_GROUND_POINTS = 200  # fewer depth readings in the lower frame: no plane is fitted
MIN_UP_COSINE = 0.5  # the plane's normal must be within 60 degrees of the camera's "up" (-y)

_INT_KEYS = ("stride", "min_px")


class DepthRegionsError(ValueError):
    """Depth-region settings that cannot be used; the message names the key."""


@dataclass(frozen=True)
class DepthRegions:
    """Settings of the depth region stage (lengths in metres, pixels at the frame's resolution)."""

    quantile: float = 0.75  # a kept segment is lifted to this quantile of its own scores
    ground_tolerance: float = 0.03  # a point within this of the plane is ground (RANSAC inlier)
    min_height: float = 0.05  # higher than this above the plane: part of an object
    contact_height: float = 0.2  # an object's lowest points (3rd percentile) lie within this
    max_top: float = 2.5  # an object's top (98th percentile height) lies below this
    max_extent: float = 2.5  # an object's extent along the ground (2nd-98th percentile) lies below this
    max_range: float = 12.0  # an object's median range lies below this
    jump_rel: float = 0.04  # depth jumps larger than this share of the nearer depth (+ jump_abs) cut
    jump_abs: float = 0.02
    min_px: int = 150  # smallest segment lifted
    stride: int = 2  # the geometry runs on every stride-th pixel (1: full resolution)

    def __post_init__(self) -> None:
        checks = {
            "quantile": 0.0 <= self.quantile <= 1.0,
            "ground_tolerance": 0.0 < self.ground_tolerance <= 1.0,
            "min_height": 0.0 <= self.min_height <= 10.0,
            "contact_height": 0.0 <= self.contact_height <= 10.0,
            "max_top": 0.0 < self.max_top <= 1000.0,
            "max_extent": 0.0 < self.max_extent <= 1000.0,
            "max_range": 0.0 < self.max_range <= 1e4,
            "jump_rel": 0.0 <= self.jump_rel <= 10.0,
            "jump_abs": 0.0 <= self.jump_abs <= 100.0,
            "min_px": 1 <= self.min_px <= 1 << 24,
            "stride": 1 <= self.stride <= 8,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise DepthRegionsError(f"{DEPTH_REGIONS_KEY}: invalid {', '.join(bad)} "
                                    f"({', '.join(f'{k}={getattr(self, k)!r}' for k in bad)})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = DEPTH_REGIONS_KEY) -> "DepthRegions":
        kwargs: dict[str, Any] = {}
        for name, v in checked_mapping(cls, data, source, DepthRegionsError).items():
            try:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError("a number")
                if name in _INT_KEYS:
                    if int(v) != v:
                        raise ValueError("an integer")
                    kwargs[name] = int(v)
                else:
                    if not math.isfinite(float(v)):
                        raise ValueError("a finite number")
                    kwargs[name] = float(v)
            except (TypeError, ValueError, OverflowError) as exc:
                raise DepthRegionsError(f"{source}.{name}: {v!r} is not valid ({exc})") from exc
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str, source: str = DEPTH_REGIONS_KEY) -> "DepthRegions":
        return cls.from_dict(parse_json(text, source, DepthRegionsError), source)


def depth_regions_of(extra: dict[str, str], source: str) -> Optional[DepthRegions]:
    """The stage a model file carries (its metadata's ``depth_regions``), or None."""
    return carried(extra, DEPTH_REGIONS_KEY, source, DepthRegions.from_json)


@dataclass
class DepthLift:
    """What the stage did to one frame: the lifted score map and why it did what it did."""

    score: np.ndarray
    reason: str  # "lifted", "no_segment" or why no plane was fitted ("no_ground")
    segments: int = 0  # segments lifted
    plane: Optional[tuple[np.ndarray, float]] = None  # unit normal n and offset d: height = n.p + d


def _points(depth_m: np.ndarray, k: CameraIntrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Optical-frame points (h x w x 3, float32) of every stride-th pixel, and where they are valid."""
    z = depth_m[::stride, ::stride].astype(np.float32)
    valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, np.float32(0))
    h, w = z.shape
    u = (np.arange(w, dtype=np.float32) * stride - np.float32(k.cx)) / np.float32(k.fx)
    v = (np.arange(h, dtype=np.float32) * stride - np.float32(k.cy)) / np.float32(k.fy)
    return np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1), valid


def _dot(points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """points (..., 3) . normal, written out: no BLAS call, so no BLAS thread pool spins against
    ONNX Runtime's threads in the node (a matmul here halved the node's frame rate on 2 cores)."""
    n = normal.astype(points.dtype)
    return points[..., 0] * n[0] + points[..., 1] * n[1] + points[..., 2] * n[2]


def fit_ground(points: np.ndarray, valid: np.ndarray, tolerance: float,
               seed: int = 0) -> Optional[tuple[np.ndarray, float]]:
    """The ground plane (unit normal n towards the camera's side, offset d > 0: height = n.p + d)
    among the valid points of the frame's lower two thirds, or None. Seeded, so a frame always
    gives the same plane."""
    lower = valid.copy()
    lower[: valid.shape[0] // 3] = False
    candidates = np.flatnonzero(lower)
    if len(candidates) < MIN_GROUND_POINTS:
        return None
    rng = np.random.default_rng(seed)
    picked = candidates[rng.choice(len(candidates), size=min(RANSAC_POINTS, len(candidates)), replace=False)]
    sample = points.reshape(-1, 3)[picked]  # float32
    triples = rng.integers(0, len(sample), size=(RANSAC_ITERATIONS, 3))
    a, b, c = (sample[triples[:, i]].astype(np.float64) for i in range(3))
    normals = np.cross(b - a, c - a)
    norms = np.sqrt((normals * normals).sum(axis=1))
    ok = norms > 1e-9
    if not ok.any():
        return None
    normals = normals[ok] / norms[ok, None]
    offsets = -(normals * a[ok]).sum(axis=1)
    flip = offsets < 0  # the camera (the origin) on the positive side
    normals[flip] *= -1
    offsets[flip] *= -1
    upward = -normals[:, 1] >= MIN_UP_COSINE  # optical frame: y points down
    if not upward.any():
        return None
    normals, offsets = normals[upward].astype(np.float32), offsets[upward].astype(np.float32)
    distance = (sample[:, 0:1] * normals[:, 0] + sample[:, 1:2] * normals[:, 1]
                + sample[:, 2:3] * normals[:, 2] + offsets)  # samples x hypotheses
    best = int(np.argmax((np.abs(distance) < tolerance).sum(axis=0)))
    inliers = sample[np.abs(distance[:, best]) < tolerance].astype(np.float64)
    if len(inliers) < 3:
        return None
    centre = inliers.mean(axis=0)
    spread = inliers - centre
    scatter = np.array([[(spread[:, i] * spread[:, j]).sum() for j in range(3)] for i in range(3)])
    normal = np.linalg.eigh(scatter)[1][:, 0]  # the direction of least spread (a 3x3 problem)
    offset = -float((normal * centre).sum())
    if offset < 0:
        normal, offset = -normal, -offset
    if -normal[1] < MIN_UP_COSINE:
        return None
    return normal, offset


def _jumps(z: np.ndarray, valid: np.ndarray, rel: float, absolute: float) -> np.ndarray:
    """The far side of every depth jump between 4-neighbours: an occluding edge belongs to the
    near surface, so an object keeps its outline and the surface behind it loses a pixel."""
    zz = np.where(valid, z, np.float32(1e6))
    cut = np.zeros(z.shape, dtype=bool)
    left, right = zz[:, :-1], zz[:, 1:]
    jump = np.abs(right - left) > rel * np.minimum(left, right) + absolute
    cut[:, :-1] |= jump & (left > right)
    cut[:, 1:] |= jump & (right > left)
    up, down = zz[:-1], zz[1:]
    jump = np.abs(down - up) > rel * np.minimum(up, down) + absolute
    cut[:-1] |= jump & (up > down)
    cut[1:] |= jump & (down > up)
    return cut


def _stands_on_ground(mask_pts: np.ndarray, heights: np.ndarray, normal: np.ndarray,
                      cfg: DepthRegions) -> bool:
    low, top = np.percentile(heights, [3, 98])
    if low > cfg.contact_height or top > cfg.max_top:
        return False
    if float(np.median(np.sqrt((mask_pts * mask_pts).sum(axis=1)))) > cfg.max_range:
        return False
    e1 = np.cross(normal, [1.0, 0.0, 0.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(normal, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    extent = 0.0
    for e in (e1, e2):
        lo, hi = np.percentile(_dot(mask_pts, e), [2, 98])
        extent = max(extent, float(hi - lo))
    return extent <= cfg.max_extent


def lift_depth_regions(score: np.ndarray, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                       cfg: DepthRegions) -> DepthLift:
    """The score map (HxW, the frame's resolution, aligned with ``depth_m``) with every segment
    that stands on the ground lifted to its own ``cfg.quantile`` score. Inputs are not modified."""
    if depth_m.shape[:2] != score.shape[:2]:
        raise ValueError(f"depth {depth_m.shape[:2]} and score {score.shape[:2]} differ in size")
    out = np.array(score, dtype=np.float32, copy=True)
    s = cfg.stride
    points, valid = _points(depth_m, intrinsics, s)
    plane = fit_ground(points, valid, cfg.ground_tolerance)
    if plane is None:
        return DepthLift(out, "no_ground")
    normal, offset = plane
    heights = _dot(points, normal) + np.float32(offset)
    objects = valid & (heights > cfg.min_height) & ~_jumps(points[..., 2], valid, cfg.jump_rel, cfg.jump_abs)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(objects.astype(np.uint8), connectivity=4)
    min_cells = max(1, cfg.min_px // (s * s))
    order = [k for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1 if stats[k, cv2.CC_STAT_AREA] >= min_cells]
    lifted = 0
    small = np.asarray(score, dtype=np.float32)[::s, ::s]  # each segment's own scores, before any lift
    for k in order[:MAX_SEGMENTS]:
        x, y, w, h = (int(v) for v in stats[k, :4])
        if y == 0:  # reaches the frame's top border: its size is unknown
            continue
        box = labels[y:y + h, x:x + w] == k
        if not _stands_on_ground(points[y:y + h, x:x + w][box], heights[y:y + h, x:x + w][box], normal, cfg):
            continue
        level = float(np.quantile(small[y:y + h, x:x + w][box], cfg.quantile))
        y0, x0 = y * s, x * s
        view = out[y0:y0 + h * s, x0:x0 + w * s]
        vh, vw = view.shape
        cells = np.kron(box, np.ones((s, s), dtype=bool))[:vh, :vw]  # the segment's cells at full resolution
        if s > 1:  # a full-resolution pixel joins only at its cell's depth: edges stay the object's
            cell_z = np.kron(points[y:y + h, x:x + w, 2], np.ones((s, s), dtype=np.float32))[:vh, :vw]
            pixel_z = depth_m[y0:y0 + vh, x0:x0 + vw]
            with np.errstate(invalid="ignore"):
                cells &= np.abs(pixel_z - cell_z) <= cfg.jump_rel * cell_z + cfg.jump_abs
        np.maximum(view, level, out=view, where=cells)
        lifted += 1
    return DepthLift(out, "lifted" if lifted else "no_segment", lifted, (normal, offset))
