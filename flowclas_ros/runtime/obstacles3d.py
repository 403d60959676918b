"""Obstacles into navigation: obstacle-mask pixels + an aligned depth image + CameraInfo -> 3D.

Why this exists: the node (rclpy) and the replay tool (rosbags) must publish the same point cloud
and the same boxes for a frame, so the maths (depth decoding, back-projection, decimation, one box
per obstacle component) and the wire layouts (PointCloud2 fields, marker contents) live here once,
as numpy and plain data. Each side only maps the plain data onto its own message classes.

Conventions: points are in the camera's optical frame (x right, y down, z forward, metres), the
frame of the colour image's header; pixel (u, v) is the centre of column u, row v, as CameraInfo's
K assumes. Depth is z-depth along the optical axis (REP 118): 16UC1 in millimetres (0 = no
reading) or 32FC1 in metres (NaN / inf / <= 0 = no reading); pixels without a reading are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from flowclas_ros.runtime.images import ImageBytes, image_from_fields

__all__ = [
    "DEPTH_ENCODINGS",
    "DEPTH_ERROR_KINDS",
    "POINT_FIELDS",
    "POINT_STEP",
    "CameraIntrinsics",
    "DepthError",
    "MarkerSpec",
    "ObstacleBox",
    "back_project",
    "camera_info_fields",
    "cloud_msg_fields",
    "cloud_points",
    "depth_and_intrinsics",
    "depth_from_fields",
    "depth_to_metres",
    "frame_obstacles",
    "obstacle_boxes",
    "obstacle_markers",
]

DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "mono16", "32FC1")
DEPTH_ERROR_KINDS: tuple[str, ...] = ("depth_encoding", "depth_size_mismatch", "bad_camera_info")

# sensor_msgs/PointField: (name, byte offset, datatype, count); datatype 7 = FLOAT32
FLOAT32 = 7
POINT_FIELDS: tuple[tuple[str, int, int, int], ...] = (
    ("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("score", 12, FLOAT32, 1))
POINT_STEP = 16

# visualization_msgs/Marker constants (the message's own values)
CUBE, TEXT_VIEW_FACING = 1, 9
ADD, DELETEALL = 0, 3
MARKER_NS_BOX, MARKER_NS_TEXT = "obstacle_boxes", "obstacle_distances"
MARKER_LIFETIME_S = 1.0  # boxes of a node that stops vanish on their own
MIN_BOX_SIZE_M = 0.05  # a flat or one-pixel component still shows as a box
_BOX_RGBA = (1.0, 0.25, 0.1, 0.5)
_TEXT_RGBA = (1.0, 1.0, 1.0, 1.0)
_TEXT_HEIGHT_M = 0.2
# Share of a component's points trimmed at each end of every axis before its box is taken: mask
# edges that spill onto the background (or floor) carry depths far from the object's own.
BOX_TRIM = 0.05


class DepthError(ValueError):
    """A depth image or CameraInfo the 3D outputs cannot use; ``kind`` is a diagnostics counter
    (one of :data:`DEPTH_ERROR_KINDS`) and the message names the numbers."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in DEPTH_ERROR_KINDS:
            raise ValueError(f"unknown DepthError kind {kind!r}; expected one of {DEPTH_ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CameraIntrinsics:
    """The pinhole part of a CameraInfo (K) and the image size it belongs to."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> CameraIntrinsics:
        """From CameraInfo's row-major 3x3 K, checked: a camera driver that has not been
        calibrated publishes zeros, which would put every point at infinity."""
        k = [float(v) for v in k]
        if len(k) != 9 or not all(math.isfinite(v) for v in k):
            raise DepthError("bad_camera_info", f"CameraInfo K must be 9 finite numbers, got {k}")
        fx, cx, fy, cy = k[0], k[2], k[4], k[5]
        if fx <= 0 or fy <= 0:
            raise DepthError("bad_camera_info", f"CameraInfo K has fx {fx:g}, fy {fy:g}: an "
                             "uncalibrated camera (focal lengths must be positive)")
        if width <= 0 or height <= 0:
            raise DepthError("bad_camera_info", f"CameraInfo size {width}x{height} is empty")
        return cls(fx, fy, cx, cy, int(width), int(height))


def depth_to_metres(depth: np.ndarray, encoding: str, depth_scale: float = 0.001) -> np.ndarray:
    """HxW float32 metres with NaN where there is no reading. ``depth_scale``: metres per unit
    of an integer (16UC1) image; 32FC1 is metres already."""
    if encoding in ("16UC1", "mono16"):
        metres = depth.astype(np.float32) * np.float32(depth_scale)
        metres[depth == 0] = np.nan
        return metres
    if encoding == "32FC1":
        metres = np.array(depth, dtype=np.float32)  # a copy: the message buffer is read-only
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
        return metres
    raise DepthError("depth_encoding", f"depth encoding {encoding!r} is not one of "
                     f"{', '.join(DEPTH_ENCODINGS)} (16UC1 millimetres or 32FC1 metres)")


def depth_from_fields(data: ImageBytes, height: int, width: int, encoding: str, step: int,
                      is_bigendian: bool = False, depth_scale: float = 0.001) -> np.ndarray:
    """sensor_msgs/Image fields of a depth image -> HxW float32 metres, NaN = no reading
    (ImageError for a malformed message, DepthError for a non-depth encoding)."""
    if encoding not in DEPTH_ENCODINGS:
        depth_to_metres(np.zeros((1, 1)), encoding)  # raises the DepthError naming the encodings
    raw = image_from_fields(data, height, width, encoding, step, is_bigendian, unit_float=False)
    return depth_to_metres(raw, encoding, depth_scale)


def depth_and_intrinsics(depth_msg: Any, info_msg: Any, depth_scale: float = 0.001
                         ) -> tuple[np.ndarray, CameraIntrinsics]:
    """A depth Image and a CameraInfo message (rclpy or rosbags: only their fields are read) ->
    metres (NaN = no reading) and intrinsics; DepthError / ImageError for ones that cannot be used."""
    depth_m = depth_from_fields(depth_msg.data, depth_msg.height, depth_msg.width, depth_msg.encoding,
                                depth_msg.step, bool(depth_msg.is_bigendian), depth_scale)
    return depth_m, CameraIntrinsics.from_k(info_msg.k, info_msg.width, info_msg.height)


def check_sizes(depth: np.ndarray, intrinsics: CameraIntrinsics, shape: tuple[int, ...]) -> None:
    """The depth image and the CameraInfo must describe the colour frame pixel for pixel:
    depth *aligned* to colour. Anything else is refused (DepthError depth_size_mismatch)."""
    h, w = shape[:2]
    if depth.shape[:2] != (h, w):
        raise DepthError("depth_size_mismatch", f"depth image is {depth.shape[1]}x{depth.shape[0]}, "
                         f"the colour frame {w}x{h}: use a depth image aligned to the colour camera")
    if (intrinsics.height, intrinsics.width) != (h, w):
        raise DepthError("depth_size_mismatch", f"CameraInfo is for {intrinsics.width}x"
                         f"{intrinsics.height}, the colour frame is {w}x{h}")


def _has_reading(depth_m: np.ndarray) -> np.ndarray:
    """Pixels with a usable depth (finite and positive), whatever produced the array."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth_m) & (depth_m > 0)


def _points(rows: np.ndarray, cols: np.ndarray, z: np.ndarray, k: CameraIntrinsics) -> np.ndarray:
    """N x 3 float32 optical-frame points of pixels (rows, cols) at z-depth z."""
    x = (cols.astype(np.float32) - np.float32(k.cx)) * z / np.float32(k.fx)
    y = (rows.astype(np.float32) - np.float32(k.cy)) * z / np.float32(k.fy)
    return np.stack([x, y, z], axis=1).astype(np.float32)


def back_project(mask: np.ndarray, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                 score: Optional[np.ndarray] = None, max_points: Optional[int] = None) -> np.ndarray:
    """N x 4 float32 (x, y, z, score) of the mask's pixels that have a depth reading.

    Decimation to ``max_points`` keeps evenly spaced pixels in raster order (deterministic, and
    spread over every obstacle in proportion to its pixel count). ``score`` (the anomaly
    heatmap) fills the fourth column; without it the column is 1."""
    check_sizes(depth_m, intrinsics, mask.shape)
    rows, cols = np.nonzero((mask > 0) & _has_reading(depth_m))
    if max_points is not None and rows.size > max_points:
        keep = np.linspace(0, rows.size - 1, max(int(max_points), 0)).astype(np.int64)
        rows, cols = rows[keep], cols[keep]
    xyz = _points(rows, cols, depth_m[rows, cols], intrinsics)
    s = (score[rows, cols].astype(np.float32) if score is not None
         else np.ones(rows.size, np.float32))
    return np.column_stack([xyz, s]).astype(np.float32)


@dataclass(frozen=True)
class ObstacleBox:
    """One obstacle component in 3D: an axis-aligned box in the optical frame around its
    points (trimmed of :data:`BOX_TRIM` outliers per axis) and its distance: the median range
    of its points from the camera, metres."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    distance_m: float
    pixels: int  # component pixels with a depth reading
    peak_score: float


def obstacle_boxes(mask: np.ndarray, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                   score: Optional[np.ndarray] = None, min_points: int = 1) -> list[ObstacleBox]:
    """One box per 8-connected component of ``mask`` (the same connectivity as the detector's
    components) that has at least ``min_points`` pixels with depth; nearest first."""
    check_sizes(depth_m, intrinsics, mask.shape)
    n, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    rows, cols = np.nonzero((labels > 0) & _has_reading(depth_m))
    ids = labels[rows, cols]
    order = np.argsort(ids, kind="stable")
    rows, cols, ids = rows[order], cols[order], ids[order]
    xyz = _points(rows, cols, depth_m[rows, cols], intrinsics)
    starts = np.searchsorted(ids, np.arange(1, n + 1))
    boxes = []
    for k in range(1, n):
        a, b = starts[k - 1], starts[k]
        if b - a < max(min_points, 1):
            continue
        p = xyz[a:b]
        lo, hi = np.quantile(p, [BOX_TRIM, 1 - BOX_TRIM], axis=0)
        size = np.maximum(hi - lo, MIN_BOX_SIZE_M)
        peak = float(score[rows[a:b], cols[a:b]].max()) if score is not None else 1.0
        boxes.append(ObstacleBox(tuple(float(v) for v in (lo + hi) / 2), tuple(float(v) for v in size),
                                 float(np.median(np.linalg.norm(p, axis=1))), int(b - a), peak))
    boxes.sort(key=lambda box: box.distance_m)
    return boxes


def frame_obstacles(mask: np.ndarray, heatmap: np.ndarray, depth_m: np.ndarray,
                    intrinsics: CameraIntrinsics, max_points: int, points: bool = True,
                    markers: bool = True) -> tuple[Optional[np.ndarray], Optional[list[MarkerSpec]]]:
    """The two 3D outputs of one frame, as the node publishes them and replay writes them:
    (N x 4 cloud points or None, marker contents or None), each computed only when asked for."""
    cloud = back_project(mask, depth_m, intrinsics, heatmap, max_points) if points else None
    specs = obstacle_markers(obstacle_boxes(mask, depth_m, intrinsics, heatmap)) if markers else None
    return cloud, specs


# ---------------------------------------------------------------- wire layouts as plain data


def cloud_msg_fields(points: np.ndarray) -> dict[str, Any]:
    """Every sensor_msgs/PointCloud2 field but the header, for N x 4 float32 (x, y, z, score):
    ``fields`` as (name, offset, datatype, count) tuples, ``data`` as bytes (little endian).
    An unorganised cloud (height 1); every point is finite, so ``is_dense``."""
    pts = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 4)
    return {"height": 1, "width": int(pts.shape[0]), "fields": POINT_FIELDS, "is_bigendian": False,
            "point_step": POINT_STEP, "row_step": POINT_STEP * int(pts.shape[0]),
            "data": pts.tobytes(), "is_dense": True}


def cloud_points(data: ImageBytes, width: int, height: int = 1) -> np.ndarray:
    """PointCloud2 data in :data:`POINT_FIELDS` layout -> N x 4 float32: the inverse of
    :func:`cloud_msg_fields`, for tools that read the node's and replay's clouds back
    (scripts/frame_delivery.py checks every point against the depth it published)."""
    return np.frombuffer(bytes(data), dtype="<f4").reshape(width * height, len(POINT_FIELDS))


def camera_info_fields(intrinsics: CameraIntrinsics) -> dict[str, Any]:
    """Every sensor_msgs/CameraInfo field but the header and ``roi`` of an undistorted pinhole
    camera: plumb_bob with zero distortion, identity R, P = [K | 0]."""
    k = intrinsics
    return {"height": k.height, "width": k.width, "distortion_model": "plumb_bob",
            "d": [0.0] * 5, "k": [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
            "binning_x": 0, "binning_y": 0}


@dataclass(frozen=True)
class MarkerSpec:
    """The content of one visualization_msgs/Marker (header aside), for either message library."""

    ns: str
    id: int
    type: int
    action: int
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgba: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    text: str = ""
    lifetime_s: float = 0.0


def obstacle_markers(boxes: Sequence[ObstacleBox]) -> list[MarkerSpec]:
    """A DELETEALL (so the boxes of the previous frame vanish), then per obstacle, nearest
    first, a translucent CUBE (ids 0, 1, ...) and a text label with its distance above it."""
    specs = [MarkerSpec("", 0, CUBE, DELETEALL)]
    for i, box in enumerate(boxes):
        specs.append(MarkerSpec(MARKER_NS_BOX, i, CUBE, ADD, box.centre, box.size, _BOX_RGBA,
                                lifetime_s=MARKER_LIFETIME_S))
        above = (box.centre[0], box.centre[1] - box.size[1] / 2 - _TEXT_HEIGHT_M, box.centre[2])
        specs.append(MarkerSpec(MARKER_NS_TEXT, i, TEXT_VIEW_FACING, ADD, above,
                                (0.0, 0.0, _TEXT_HEIGHT_M), _TEXT_RGBA, f"{box.distance_m:.2f} m",
                                MARKER_LIFETIME_S))
    return specs


def split_seconds(seconds: float) -> tuple[int, int]:
    """(sec, nanosec) of a duration, as builtin_interfaces/Duration holds it."""
    ns = int(round(seconds * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000
