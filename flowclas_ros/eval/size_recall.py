"""Recall at the model's own threshold by obstacle size: does the robot flag small and far ones?

Pooled pixel metrics are dominated by large, near obstacles (they hold most anomaly pixels), so a
model can score well while missing everything small. Each ground-truth obstacle (an 8-connected
component of anomaly pixels at the frame's own resolution) falls into a size bucket; per bucket:

* ``pixel_recall``: the share of its anomaly pixels with score >= the model threshold (what the
  node's mask holds before its minimum-area filter);
* ``hit_rate``: the share of its obstacles with at least one such pixel (the obstacle is touched by
  the mask at all);
* ``objects`` and ``pixels``: how many obstacles and anomaly pixels the bucket holds.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from flowclas_ros.runtime.labels import ANOMALY

# (name, smallest area, largest area + 1) in pixels at the source resolution
SIZE_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("<200", 0, 200), ("200-1000", 200, 1000), ("1000-5000", 1000, 5000), (">=5000", 5000, math.inf))


def bucket_of(area: int) -> str:
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= area < hi:
            return name
    raise ValueError(f"negative area {area}")


class SizeRecall:
    """Streaming per-bucket counts over frames (memory: a few integers per bucket)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.counts = {name: {"objects": 0, "hit": 0, "pixels": 0, "flagged": 0}
                       for name, _, _ in SIZE_BUCKETS}

    def update(self, heat: np.ndarray, label: np.ndarray) -> None:
        """One frame: HxW scores and HxW 0/1/255 labels of the same shape."""
        n, comp, stats, _ = cv2.connectedComponentsWithStats((label == ANOMALY).astype(np.uint8),
                                                             connectivity=8)
        if n <= 1:
            return
        flagged = np.bincount(comp[heat >= self.threshold], minlength=n)
        for k in range(1, n):
            area = int(stats[k, cv2.CC_STAT_AREA])
            c = self.counts[bucket_of(area)]
            c["objects"] += 1
            c["pixels"] += area
            c["flagged"] += int(flagged[k])
            c["hit"] += int(flagged[k] > 0)

    def merge(self, other: "SizeRecall") -> None:
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
