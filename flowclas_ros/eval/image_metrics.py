"""Image-level anomaly metrics: one score per frame and the exact image AUROC.

CL-flow / MVTec AD report whether an image holds an anomaly at all, not where; this module turns
a pixel score map into that one number and ranks the frames by it. numpy only.

An image is anomalous when any of its pixels is labelled 1;
its score is the max of its non-void pixel scores, or the mean of the top ``ceil(top_k * n)`` of
them (``top_k`` a fraction; less sensitive to one hot pixel). Image AUROC is computed exactly
by ranks (:func:`rank_auroc`: Mann-Whitney U with mid-ranks for ties, the same value as
scikit-learn's ``roc_auc_score``). Undefined (NaN) when all images are anomalous or none is,
e.g. on road-obstacle sets where every frame holds an obstacle.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from flowclas_ros.runtime.labels import VOID

__all__ = ["ImageMetrics", "image_score", "rank_auroc"]


def rank_auroc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Exact AUROC by ranks: (sum of the positives' mid-ranks - P(P+1)/2) / (P N), i.e. the
    probability that a random positive outscores a random negative, ties counting 1/2; NaN
    without positives or without negatives. Ranks are integers or halves, so the sum is exact
    in float64 for any realistic number of images."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ordered = s[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based mid-ranks
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def image_score(scores: np.ndarray, labels: Optional[np.ndarray] = None, top_k: float = 0.0) -> float:
    """Image-level score of a pixel score map: the max (``top_k == 0``) or the mean of the top
    ``ceil(top_k * n)`` of its n non-void pixels (``labels == 255`` left out when given); NaN
    when no pixel is valid."""
    if not 0.0 <= top_k <= 1.0:
        raise ValueError(f"top_k must be a fraction in [0, 1], got {top_k!r}")
    s = np.asarray(scores, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != s.shape:
            raise ValueError(f"scores {s.shape} and labels {labels.shape} differ in shape")
        s = s[labels != VOID]
    s = s.ravel()
    if s.size == 0:
        return float("nan")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN at non-void pixels")
    if top_k == 0.0:
        return float(s.max())
    k = max(1, int(np.ceil(top_k * s.size)))
    return float(np.partition(s, s.size - k)[s.size - k:].astype(np.float64).mean())


class ImageMetrics:
    """Image-level scores (max and top-k mean) and their exact image AUROC, one entry per frame;
    an image is anomalous when any pixel is labelled 1, frames without a valid pixel are skipped."""

    def __init__(self, top_k: float = 0.01) -> None:
        if not 0.0 < top_k <= 1.0:
            raise ValueError(f"top_k must be a fraction in (0, 1], got {top_k!r}")
        self.top_k = float(top_k)
        self.max_scores: list[float] = []
        self.topk_scores: list[float] = []
        self.anomalous: list[bool] = []
        self.skipped = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> Optional[dict]:
        """Add one frame; returns {"anomalous", "max", "topk"} or None when it has no valid pixel."""
        labels = np.asarray(labels)
        m = image_score(scores, labels, 0.0)
        if np.isnan(m):
            self.skipped += 1
            return None
        t = image_score(scores, labels, self.top_k)
        anomalous = bool(np.any(labels == 1))
        self.max_scores.append(m)
        self.topk_scores.append(t)
        self.anomalous.append(anomalous)
        return {"anomalous": anomalous, "max": m, "topk": t}

    def merge(self, other: "ImageMetrics") -> None:
        """Append another shard's frames (after this one's: the order of a single pass over
        the shards one after the other; the AUROC does not depend on it anyway)."""
        if other.top_k != self.top_k:
            raise ValueError(f"merge needs the same top_k, got {other.top_k} vs {self.top_k}")
        self.max_scores += other.max_scores
        self.topk_scores += other.topk_scores
        self.anomalous += other.anomalous
        self.skipped += other.skipped

    def result(self) -> dict:
        y = np.asarray(self.anomalous, dtype=bool)
        return {"auroc_max": rank_auroc(self.max_scores, y), "auroc_topk": rank_auroc(self.topk_scores, y),
                "top_k": self.top_k, "images": int(y.size), "anomalous": int(y.sum()),
                "normal": int(y.size - y.sum()), "skipped": self.skipped}
