"""Recall at the model's own threshold by obstacle size and by obstacle contrast.

Pooled pixel metrics are dominated by large, near, colourful obstacles (they hold most anomaly
pixels), so a model can score well while missing everything small, or everything that looks like
the wall behind it. Each ground-truth obstacle (an 8-connected component of anomaly pixels at the
frame's own resolution) falls into a bucket of its size (`SizeRecall`) and of its contrast to its
surroundings (`ContrastRecall`); per bucket:

* ``pixel_recall``: the share of its anomaly pixels with score >= the model threshold (what the
  node's mask holds before its minimum-area filter);
* ``hit_rate``: the share of its obstacles with at least one such pixel (the obstacle is touched by
  the mask at all);
* ``objects`` and ``pixels``: how many obstacles and anomaly pixels the bucket holds.

Contrast (`obstacle_contrasts`): the CIELAB distance (Delta E 1976: L 0-100, a/b about +-100)
between the obstacle's mean colour and the mean colour of a ring of inlier pixels around it. An
untextured grey cube before a grey wall scores a few units; a red toy on the blue floor, 60 and
more. Obstacles whose ring holds no inlier pixel (one fills the frame) have no contrast and fall
in no contrast bucket.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from flowclas_ros.runtime.labels import ANOMALY, INLIER

Buckets = tuple[tuple[str, float, float], ...]
# (name, smallest area, largest area + 1) in pixels at the source resolution
SIZE_BUCKETS: Buckets = (
    ("<200", 0, 200), ("200-1000", 200, 1000), ("1000-5000", 1000, 5000), (">=5000", 5000, math.inf))
# (name, lowest, highest) Delta E of an obstacle against its ring
CONTRAST_BUCKETS: Buckets = (
    ("<10", 0, 10), ("10-20", 10, 20), ("20-40", 20, 40), (">=40", 40, math.inf))
LOW_CONTRAST = 20.0  # below this Delta E an obstacle counts as low-contrast (montage marks its misses)
RING_FRACTION = 0.02  # ring width as a share of the frame's shorter side (10 px at 640x480)


def _bucket(buckets: Buckets, value: float) -> str:
    for name, lo, hi in buckets:
        if lo <= value < hi:
            return name
    raise ValueError(f"value {value} is in no bucket")


def bucket_of(area: int) -> str:
    return _bucket(SIZE_BUCKETS, area)


def contrast_bucket_of(delta_e: float) -> str:
    return _bucket(CONTRAST_BUCKETS, delta_e)


def obstacles(label: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected anomaly components of a 0/1/255 label: (count + 1, component map, cv2 stats)."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats((label == ANOMALY).astype(np.uint8),
                                                         connectivity=8)
    return n, comp, stats


def obstacle_contrasts(rgb: np.ndarray, label: np.ndarray,
                       comp: Optional[np.ndarray] = None, stats: Optional[np.ndarray] = None
                       ) -> np.ndarray:
    """Delta E of each obstacle (component 1..n-1, index k-1) against its inlier ring; NaN when
    the ring holds no inlier pixel. Work per obstacle is bounded by its box plus the ring."""
    if comp is None or stats is None:
        _, comp, stats = obstacles(label)
    h, w = label.shape
    r = max(1, round(RING_FRACTION * min(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = np.full(len(stats) - 1, np.nan)
    for k in range(1, len(stats)):
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        y0, y1, x0, x1 = max(0, y - r), min(h, y + bh + r), max(0, x - r), min(w, x + bw + r)
        inside = (comp[y0:y1, x0:x1] == k).astype(np.uint8)
        ring = (cv2.dilate(inside, kernel) > 0) & (label[y0:y1, x0:x1] == INLIER)
        if not ring.any():
            continue
        lab = cv2.cvtColor(rgb[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)
        out[k - 1] = float(np.linalg.norm(lab[inside > 0].mean(0) - lab[ring].mean(0)))
    return out


class _BinnedRecall:
    """Streaming per-bucket counts over frames (memory: a few integers per bucket)."""

    buckets: Buckets = ()

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.counts = {name: {"objects": 0, "hit": 0, "pixels": 0, "flagged": 0}
                       for name, _, _ in self.buckets}

    def _count(self, bucket: str, area: int, flagged: int) -> None:
        c = self.counts[bucket]
        c["objects"] += 1
        c["pixels"] += area
        c["flagged"] += flagged
        c["hit"] += int(flagged > 0)

    def _flagged(self, heat: np.ndarray, comp: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(comp[heat >= self.threshold], minlength=n)

    def merge(self, other: "_BinnedRecall") -> None:
        """Add another shard's counts (integers: the merge is exact)."""
        if other.threshold != self.threshold:
            raise ValueError(f"merge needs the same threshold, got {other.threshold} vs {self.threshold}")
        for name, c in other.counts.items():
            for k, v in c.items():
                self.counts[name][k] += int(v)

    def result(self) -> dict[str, dict[str, float | int]]:
        """{bucket: {objects, pixels, pixel_recall %, hit_rate %}}; NaN recall for empty buckets."""
        out: dict[str, dict[str, float | int]] = {}
        for name, c in self.counts.items():
            out[name] = {"objects": c["objects"], "pixels": c["pixels"],
                         "pixel_recall": 100.0 * c["flagged"] / c["pixels"] if c["pixels"] else math.nan,
                         "hit_rate": 100.0 * c["hit"] / c["objects"] if c["objects"] else math.nan}
        return out


class SizeRecall(_BinnedRecall):
    """Recall at the threshold by obstacle size (`SIZE_BUCKETS`)."""

    buckets = SIZE_BUCKETS

    def update(self, heat: np.ndarray, label: np.ndarray) -> None:
        """One frame: HxW scores and HxW 0/1/255 labels of the same shape."""
        n, comp, stats = obstacles(label)
        if n <= 1:
            return
        flagged = self._flagged(heat, comp, n)
        for k in range(1, n):
            area = int(stats[k, cv2.CC_STAT_AREA])
            self._count(bucket_of(area), area, int(flagged[k]))


class ContrastRecall(_BinnedRecall):
    """Recall at the threshold by obstacle contrast to its surroundings (`CONTRAST_BUCKETS`)."""

    buckets = CONTRAST_BUCKETS

    def update(self, heat: np.ndarray, label: np.ndarray, rgb: np.ndarray) -> None:
        """One frame: HxW scores, HxW 0/1/255 labels and the HxWx3 uint8 RGB frame."""
        n, comp, stats = obstacles(label)
        if n <= 1:
            return
        flagged = self._flagged(heat, comp, n)
        for k, delta_e in enumerate(obstacle_contrasts(rgb, label, comp, stats), start=1):
            if math.isfinite(delta_e):
                self._count(contrast_bucket_of(delta_e), int(stats[k, cv2.CC_STAT_AREA]), int(flagged[k]))


def low_contrast_misses(rgb: np.ndarray, heat: np.ndarray, label: np.ndarray, threshold: float,
                        max_recall: float = 0.5) -> np.ndarray:
    """uint8 mask of the low-contrast obstacles (Delta E < `LOW_CONTRAST`) of which less than
    `max_recall` of the pixels are flagged at `threshold`: the misses the montage marks."""
    n, comp, stats = obstacles(label)
    out = np.zeros(label.shape, np.uint8)
    if n <= 1:
        return out
    flagged = np.bincount(comp[heat >= threshold], minlength=n)
    for k, delta_e in enumerate(obstacle_contrasts(rgb, label, comp, stats), start=1):
        if delta_e < LOW_CONTRAST and flagged[k] < max_recall * stats[k, cv2.CC_STAT_AREA]:
            out[comp == k] = 1
    return out

