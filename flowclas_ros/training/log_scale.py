"""What the log recipe reads off the log itself: how big obstacles look, and how much the ground varies.

Why this exists: the sizes and the contrast of the outliers pasted during training were chosen in
one world, by hand. On another robot the same obstacle covers a different number of pixels (lens,
camera height, how far the ground reaches) and the ground varies more or less from pixel to pixel,
so a recipe fitted to one world pastes outliers of the wrong size and the wrong subtlety in the
next. This module measures both from the training log, so the choice moves with the log:

* sizes: when the log holds a CameraInfo and an aligned depth image (an RGB-D camera, or the
  simulator's bags), an obstacle of ``OBSTACLE_SIZE_M`` at the log's own near and far ground
  distances (2nd and 90th percentile of its depth pixels) spans ``size * fx / z`` pixels; the
  paste range is that span, floored at the model's feature cell (smaller pastes cannot be learned)
  and capped at ``MAX_SCALE`` of the short side;
* contrast: the median grey-level difference between ground pixels a few cells apart, which sets
  the least change a procedural outlier makes (subtle grounds get subtle outliers).

Without depth the sizes fall back to the model grid (one cell up to ``MAX_SCALE``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import Sample
from flowclas_ros.data.layouts import evenly_spaced

log = logging.getLogger(__name__)

OBSTACLE_SIZE_M = (0.1, 1.0)  # largest side of the obstacles to catch, metres
MAX_SCALE = 0.45  # largest paste, share of the image's short side
CONTRAST_CHANGE = (8, 32)  # bounds of the procedural outliers' least grey-level change
_FRAMES = 24  # frames (and depth images) measured, evenly spaced over the log


@dataclass(frozen=True)
class LogScale:
    """Measured on a log: focal length and ground distances (None without depth), frame size,
    the ground's local grey-level variation, and the paste sizes derived (pixels, longest side)."""

    short_side_px: int
    ground_contrast: float
    focal_px: Optional[float] = None
    near_m: Optional[float] = None
    far_m: Optional[float] = None
    min_px: float = 0.0
    max_px: float = 0.0

    def describe(self) -> str:
        geometry = (f"fx {self.focal_px:.0f} px, ground at {self.near_m:.1f} m (2 %) to {self.far_m:.1f} m "
                    f"(90 %)" if self.focal_px else "no depth + CameraInfo in the log: sizes from the model grid")
        return (f"log scale: {geometry}; pastes {self.min_px:.0f}-{self.max_px:.0f} px (longest side, "
                f"{OBSTACLE_SIZE_M[0]:g}-{OBSTACLE_SIZE_M[1]:g} m obstacles); ground contrast "
                f"{self.ground_contrast:.1f} grey levels -> procedural min_change {self.min_change()}")

    def min_change(self) -> int:
        return int(np.clip(round(self.ground_contrast), *CONTRAST_CHANGE))

    def overrides(self, window_short_px: float) -> list[str]:
        """The `--set` overrides of the paste sizes (shares of the short side of the image a paste
        goes into: the frame, or the training crop) and of the procedural contrast."""
        lo = self.min_px / window_short_px
        hi = min(0.6, max(lo * 2, self.max_px / window_short_px))
        proc_hi = min(1.0, hi * 4 / 3)  # a blob covers 30-70 % of its box: boxes a third larger
        return [f"outlier_exposure.scale=[{lo:.4f},{hi:.4f}]",
                f"outlier_exposure.procedural.scale=[{lo:.4f},{proc_hi:.4f}]",
                f"outlier_exposure.flow_patches.scale=[{lo:.4f},{proc_hi:.4f}]",
                "outlier_exposure.size_sampling=log_uniform",
                f"outlier_exposure.procedural.min_change={self.min_change()}"]


def ground_contrast(samples: Sequence[Sample], spacing_px: int = 16, pairs: int = 20000,
                    seed: int = 0) -> float:
    """Median |grey difference| of pixel pairs ``spacing_px`` apart in the lower half of the
    frames (where the ground is), over up to ``_FRAMES`` frames."""
    rng = np.random.default_rng(seed)
    diffs = []
    for s in evenly_spaced(list(samples), _FRAMES):
        grey = read_image_rgb(s.image_path).astype(np.float32).mean(axis=2)
        h, w = grey.shape
        if h < 4 * spacing_px or w < 4 * spacing_px:
            continue
        y = rng.integers(h // 2, h - spacing_px, pairs // _FRAMES)
        x = rng.integers(0, w - spacing_px, pairs // _FRAMES)
        dy, dx = (spacing_px, 0) if rng.random() < 0.5 else (0, spacing_px)
        diffs.append(np.abs(grey[y, x] - grey[y + dy, x + dx]))
    return float(np.median(np.concatenate(diffs))) if diffs else float(CONTRAST_CHANGE[1])


def _depth_and_focal(bag_path: str | Path) -> tuple[Optional[float], list[np.ndarray]]:
    """fx of the log's only CameraInfo topic and up to ``_FRAMES`` depth images of its only depth
    Image topic (32FC1 metres); (None, []) when the log lacks either."""
    from flowclas_ros.data.rosbag import CAMERA_INFO, IMAGE, Bag, BagError, deserialize

    try:
        bag = Bag(bag_path)
    except BagError:
        return None, []
    infos = [t for t, kind in bag.topics.items() if kind == CAMERA_INFO]
    depths = [t for t, kind in bag.topics.items() if kind == IMAGE and "depth" in t.lower()]
    if len(infos) != 1 or len(depths) != 1:
        return None, []
    focal, images = None, []
    count = bag.expected.get(depths[0], 0)
    every = max(1, count // _FRAMES) if count else 10
    seen = 0
    for message in bag.messages([infos[0], depths[0]]):
        msg = deserialize(message)
        if message.topic == infos[0]:
            focal = focal or float(msg.k[0])
            continue
        seen += 1
        if (seen - 1) % every or len(images) >= _FRAMES or msg.encoding != "32FC1":
            continue
        images.append(np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width))
        if focal and len(images) >= _FRAMES:
            break
    return (focal, images) if focal and images else (None, [])


def measure_log(bag_path: str | Path, samples: Sequence[Sample], cell_px: float) -> LogScale:
    """The log's scale (module docstring); ``cell_px``: the model's feature cell in frame pixels."""
    first = read_image_rgb(samples[0].image_path)
    short = int(min(first.shape[:2]))
    contrast = ground_contrast(samples)
    focal, depths = _depth_and_focal(bag_path)
    if focal is None:
        return LogScale(short, contrast, min_px=cell_px, max_px=MAX_SCALE * short)
    z = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in depths])
    near, far = (float(v) for v in np.percentile(z, [2, 90]))
    min_px = max(cell_px, OBSTACLE_SIZE_M[0] * focal / far)
    max_px = min(MAX_SCALE * short, OBSTACLE_SIZE_M[1] * focal / near)
    return LogScale(short, contrast, focal, round(near, 3), round(far, 3), min_px, max(max_px, 2 * min_px))
