"""Component metrics of anomaly segmentation (sIoU, PPV, mean F1), the SMIYC obstacle-level numbers.

Pixel metrics reward large blobs; these count objects: whether each ground-truth obstacle is
found and whether each predicted blob is real. The definitions follow the SegmentMeIfYouCan
(SMIYC) benchmark code (road-anomaly-benchmark, ``metrics/instance_segmentation.py``); see
shared/reference/metrics-and-datasets.md. numpy + OpenCV only (no torch, no scikit-learn).

Per frame, at a score threshold (the pixel best-F1 threshold in the evaluator):
prediction = ``score >= threshold`` minus void pixels; 8-connected components of prediction and
of the ground-truth anomaly (label 1); predicted components with fewer than ``min_pred_area``
pixels are dropped; ground-truth components with fewer than ``min_gt_area`` pixels become void
(region of interest = non-void pixels minus those). Within the region of interest:

- sIoU of a GT component ``k`` with the set ``P(k)`` of predicted components touching it:
  ``|k ∩ P(k)| / (|P(k)| + |k| - |k ∩ P(k)| - |P(k) ∩ (other GT components)|)``, i.e. predicted
  pixels lying on OTHER ground-truth components do not count against ``k``;
- PPV of a predicted component ``p``: ``|p ∩ GT anomaly| / |p|``;
- for t in linspace(0.25, 0.75, 11): TP(t) = #GT components with sIoU > t, FN(t) = the others,
  FP(t) = #predicted components with PPV < t, F1(t) = 2TP / (2TP + FN + FP), summed over all
  frames before the ratio; ``mean_f1`` is the mean of F1(t) over the 11 thresholds;
- ``siou`` / ``ppv``: means over all GT / predicted components of all frames.

``tp_at_equal=True`` counts sIoU == t as a TP, as the SMIYC code does (``>=``); the default follows
the benchmark's paper and reference text (``>``). The two only differ on exact ties.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

import cv2
import numpy as np

from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.pixel_metrics import f1_from_counts
from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID

__all__ = ["SIOU_THRESHOLDS", "ComponentMetrics", "FrameComponents", "frame_components"]

SIOU_THRESHOLDS: np.ndarray = np.linspace(0.25, 0.75, 11)


@dataclass
class FrameComponents:
    """Component-level results of one frame."""

    siou: np.ndarray  # per ground-truth component (float64)
    ppv: np.ndarray  # per predicted component
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray  # within the region of interest
    gt_voided: int  # ground-truth components below min_gt_area, turned void
    pred_dropped: int  # predicted components below min_pred_area

    def counts(self, thresholds: Sequence[float] = SIOU_THRESHOLDS,
               tp_at_equal: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(TP, FN, FP) per sIoU/PPV threshold."""
        t = np.asarray(thresholds, dtype=np.float64)[:, None]
        hit = (self.siou[None] >= t) if tp_at_equal else (self.siou[None] > t)
        tp = hit.sum(axis=1)
        return tp, self.siou.size - tp, (self.ppv[None] < t).sum(axis=1)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return int(n), lab


def frame_components(scores: Optional[np.ndarray], labels: np.ndarray,
                     threshold: Optional[float] = None, min_pred_area: int = MIN_PRED_AREA,
                     min_gt_area: int = MIN_GT_AREA, pred_mask: Optional[np.ndarray] = None) -> FrameComponents:
    """sIoU per GT component and PPV per predicted component of one frame (module docstring).

    The prediction is ``scores >= threshold`` (float32), or ``pred_mask`` (bool) if given."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be HxW, got {labels.shape}")
    if pred_mask is None:
        if scores is None or threshold is None:
            raise ValueError("give scores and threshold, or pred_mask")
        scores = np.asarray(scores)
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
        pred_mask = scores.astype(np.float32, copy=False) >= np.float32(threshold)
    elif pred_mask.shape != labels.shape:
        raise ValueError(f"pred_mask {pred_mask.shape} and labels {labels.shape} differ in shape")
    bad = ~np.isin(labels, (INLIER, ANOMALY, VOID))
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or 255; found {np.unique(labels[bad])[:10]}")
    valid = labels != VOID

    n_g, gt = _components(labels == 1)
    gsize_all = np.bincount(gt.ravel(), minlength=n_g)
    small = gsize_all < int(min_gt_area)
    small[0] = False
    roi = valid & ~small[gt]

    n_p, pred = _components(np.asarray(pred_mask, dtype=bool) & valid)
    psize_all = np.bincount(pred.ravel(), minlength=n_p)
    drop = psize_all < int(min_pred_area)
    drop[0] = True  # background stays 0
    pred_dropped = int(drop[1:].sum())

    g = gt[roi]
    p = np.where(drop[pred[roi]], 0, pred[roi])
    gsize = np.bincount(g, minlength=n_g).astype(np.float64)
    psize = np.bincount(p, minlength=n_p).astype(np.float64)
    both = (g > 0) & (p > 0)
    pairs, inter = np.unique(g[both].astype(np.int64) * n_p + p[both], return_counts=True)
    pg, pp = pairs // n_p, pairs % n_p
    inter = inter.astype(np.float64)
    on_gt = np.bincount(pp, weights=inter, minlength=n_p)  # predicted pixels on any GT component

    # sIoU_k = |k ∩ P(k)| / (|P(k)| + |k| - |k ∩ P(k)| - |P(k) ∩ other GT|)
    #        = |k ∩ P(k)| / (|P(k)| + |k| - |P(k) ∩ any GT|)     (pairs (k, p) are unique)
    inter_g = np.bincount(pg, weights=inter, minlength=n_g)
    union_pred_g = np.bincount(pg, weights=psize[pp], minlength=n_g)
    on_gt_g = np.bincount(pg, weights=on_gt[pp], minlength=n_g)
    gt_ids = np.flatnonzero(gsize[1:] > 0) + 1
    siou = inter_g[gt_ids] / (union_pred_g[gt_ids] + gsize[gt_ids] - on_gt_g[gt_ids])
    pred_ids = np.flatnonzero(psize[1:] > 0) + 1
    ppv = on_gt[pred_ids] / psize[pred_ids]
    return FrameComponents(siou, ppv, gsize[gt_ids].astype(np.int64),
                           psize[pred_ids].astype(np.int64), int(small.sum()), pred_dropped)


class ComponentMetrics:
    """Streaming SMIYC component metrics: sIoU, PPV and mean F1 over sIoU/PPV thresholds.

    ``update(scores, labels, threshold)`` per frame (or ``update_frame`` with a precomputed
    :class:`FrameComponents`); ``result()`` -> fractions, NaN where undefined. Memory: a few
    counters, whatever the number of frames. The sIoU and PPV sums are exact (rational), so the
    means do not depend on the order of the frames and shards pooled with :meth:`merge` give
    the single pass's numbers to the last bit."""

    def __init__(self, min_pred_area: int = MIN_PRED_AREA, min_gt_area: int = MIN_GT_AREA,
                 thresholds: Sequence[float] = SIOU_THRESHOLDS, tp_at_equal: bool = False) -> None:
        self.min_pred_area = int(min_pred_area)
        self.min_gt_area = int(min_gt_area)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.tp_at_equal = bool(tp_at_equal)
        k = self.thresholds.size
        self.tp = np.zeros(k, np.int64)
        self.fn = np.zeros(k, np.int64)
        self.fp = np.zeros(k, np.int64)
        self.siou_sum = Fraction(0)
        self.ppv_sum = Fraction(0)
        self.gt_components = 0
        self.pred_components = 0
        self.gt_voided = 0
        self.pred_dropped = 0
        self.frames = 0

    def update(self, scores: np.ndarray, labels: np.ndarray, threshold: float) -> FrameComponents:
        fc = frame_components(scores, labels, threshold, self.min_pred_area, self.min_gt_area)
        self.update_frame(fc)
        return fc

    def update_frame(self, fc: FrameComponents) -> None:
        tp, fn, fp = fc.counts(self.thresholds, self.tp_at_equal)
        self.tp += tp
        self.fn += fn
        self.fp += fp
        self.siou_sum += sum(map(Fraction, fc.siou.tolist()), Fraction(0))
        self.ppv_sum += sum(map(Fraction, fc.ppv.tolist()), Fraction(0))
        self.gt_components += int(fc.siou.size)
        self.pred_components += int(fc.ppv.size)
        self.gt_voided += fc.gt_voided
        self.pred_dropped += fc.pred_dropped
        self.frames += 1

    _COUNTERS = ("gt_components", "pred_components", "gt_voided", "pred_dropped", "frames")

    def merge(self, other: "ComponentMetrics") -> None:
        """Add another shard's counts and exact sums: the pooled result equals a single pass."""
        if ((other.min_pred_area, other.min_gt_area, other.tp_at_equal)
                != (self.min_pred_area, self.min_gt_area, self.tp_at_equal)
                or not np.array_equal(other.thresholds, self.thresholds)):
            raise ValueError("merge needs component metrics with the same settings")
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.siou_sum += other.siou_sum
        self.ppv_sum += other.ppv_sum
        for k in self._COUNTERS:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def state(self) -> dict:
        """JSON-able state (exact sums as integer numerator / denominator strings)."""
        return {"min_pred_area": self.min_pred_area, "min_gt_area": self.min_gt_area,
                "thresholds": self.thresholds.tolist(), "tp_at_equal": self.tp_at_equal,
                "tp": self.tp.tolist(), "fn": self.fn.tolist(), "fp": self.fp.tolist(),
                "siou_sum": [str(self.siou_sum.numerator), str(self.siou_sum.denominator)],
                "ppv_sum": [str(self.ppv_sum.numerator), str(self.ppv_sum.denominator)],
                **{k: getattr(self, k) for k in self._COUNTERS}}

    @classmethod
    def from_state(cls, state: dict) -> "ComponentMetrics":
        out = cls(int(state["min_pred_area"]), int(state["min_gt_area"]), state["thresholds"],
                  bool(state["tp_at_equal"]))
        k = out.thresholds.size
        for name in ("tp", "fn", "fp"):
            arr = np.asarray(state[name], np.int64)
            if arr.shape != (k,):
                raise ValueError(f"component state: {name} must hold {k} counts")
            setattr(out, name, arr)
        out.siou_sum = Fraction(int(state["siou_sum"][0]), int(state["siou_sum"][1]))
        out.ppv_sum = Fraction(int(state["ppv_sum"][0]), int(state["ppv_sum"][1]))
        for name in cls._COUNTERS:
            setattr(out, name, int(state[name]))
        return out

    def result(self) -> dict:
        nan = float("nan")
        f1 = f1_from_counts(self.tp, self.fp, self.fn)
        return {
            "siou": float(self.siou_sum / self.gt_components) if self.gt_components else nan,
            "ppv": float(self.ppv_sum / self.pred_components) if self.pred_components else nan,
            "mean_f1": float(np.mean(f1)) if f1.size and not np.isnan(f1).any() else nan,
            "f1": [float(v) for v in f1],
            "thresholds": [float(v) for v in self.thresholds],
            "tp": self.tp.tolist(), "fn": self.fn.tolist(), "fp": self.fp.tolist(),
            "counts": {"gt_components": self.gt_components,
                       "pred_components": self.pred_components,
                       "gt_components_voided": self.gt_voided,
                       "pred_components_dropped": self.pred_dropped, "frames": self.frames,
                       "min_pred_area": self.min_pred_area, "min_gt_area": self.min_gt_area},
        }
