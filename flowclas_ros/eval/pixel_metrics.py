"""Pooled pixel metrics of anomaly score maps (AUPRC, AUROC, FPR95, best F1), streamed with bounded memory.

The evaluator sees every pixel of every frame and cannot hold them all: this accumulator keeps a
fixed-size table whatever the number of frames, and stays exact (scikit-learn's numbers) as long
as that table holds every distinct score. The definitions follow the SegmentMeIfYouCan (SMIYC)
benchmark code (road-anomaly-benchmark, ``metrics/pixel_classification*.py``); see
shared/reference/metrics-and-datasets.md. numpy only (no torch, no scikit-learn).

Labels: 0 inlier (negative), 1 anomaly (positive), 255 void (dropped). The pixels of all frames are
pooled, never averaged per frame. A pixel is predicted positive at threshold ``t`` when
``score >= t`` (scikit-learn's convention and the runtime's ``heatmap >= threshold``).

Design: every score is cast to float32 (heatmaps are float32), ``-0.0`` is folded onto ``+0.0``,
and the float32 bit pattern is mapped by a monotone bijection onto uint32 (positive floats: set
the sign bit; negative floats: flip all bits), so unsigned order == float order over the whole
float range, infinities included. The accumulator is a sorted table of bins ``key >> shift`` with
their positive and negative pixel counts, preallocated to ``max_bins`` entries (2**20 by default:
20 MiB, whatever the number of frames). It starts EXACT (``shift = 0``: one bin per distinct
float32 score) and, only when more than ``max_bins`` distinct bins have been seen, halves the
resolution (``shift += 1``, adjacent bins merged) as often as needed. With the default
``max_bins``, at most 2**20 bins exist at ``shift = 12``, so the resolution is never coarser than
the top 20 key bits, i.e. a relative score width of 2**-11 (~4.9e-4) at any magnitude, even for
scores spread over the whole float range; in practice it adapts to where the scores lie
(``relative_resolution`` reports the bound reached: 2**(shift - 23)). No score range has to be
known in advance and equal scores always share a bin.

The curves are the cumulative sums of the bins in descending score order, exactly like
scikit-learn's ``_binary_clf_curve`` on the distinct scores - except that, once coarsened, scores
closer together than one bin are treated as tied. A bin's threshold is the SMALLEST float32 the
bin can hold, so for every reported threshold ``t`` the counts on the curve are exactly the counts
of ``score >= t`` on the raw float32 scores (checked by the tests), e.g. ``best_f1_threshold``
reproduces ``best_f1`` when applied to the heatmaps. Thresholds are compared in float32
(``scores >= np.float32(t)``), as NumPy compares a float32 heatmap with a Python float.

- AUPRC: step sum ``sum_i (R_i - R_{i-1}) * P_i`` (scikit-learn ``average_precision_score``,
  NOT the trapezoidal area).
- AUROC: trapezoidal area under (FPR, TPR) starting at (0, 0).
- FPR95: ``fpr[searchsorted(tpr, 0.95)]`` on the full curve sorted by rising TPR (no point dropped:
  scikit-learn's ``roc_curve`` must be called with ``drop_intermediate=False`` to compare).
- best F1: max over thresholds of ``2TP / (2TP + FP + FN)``, with its threshold (the highest
  threshold on ties).

Agreement with scikit-learn (on the float32 scores) is exact while ``shift == 0``; after
coarsening, near-tied scores are merged, which moved AP/AUROC/FPR95 by < 1e-3 in every test case
(see test_metrics.py). What no bounded accumulator can do: separate classes whose scores differ by
less than one bin; raise ``max_bins`` when the bound in ``relative_resolution`` is too coarse.

Undefined values: with no positive pixels AUPRC, AUROC, FPR95 and best F1 are NaN and
``status == "no_positives"``; with no negative pixels AUROC and FPR95 are NaN (AUPRC is 1) and
``status == "no_negatives"``; with no valid pixel at all everything is NaN and ``status == "empty"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID

__all__ = [
    "PixelMetrics",
    "average_precision",
    "counts_at_threshold",
    "f1_from_counts",
    "float32_to_key",
    "key_to_float32",
]

_SIGN = np.uint32(0x80000000)
_NEG_INF_KEY = 0x007FFFFF  # key of -inf; smaller keys are negative NaN bit patterns


# ---------------------------------------------------------------- helpers


def float32_to_key(scores: np.ndarray) -> np.ndarray:
    """Monotone bijection float32 -> uint32: ``a < b`` (floats, non-NaN) iff ``key(a) < key(b)``.

    ``-0.0`` must already be folded onto ``+0.0`` by the caller if they should compare equal."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
    negative = (bits & _SIGN) != 0
    return np.where(negative, ~bits, bits | _SIGN)


def key_to_float32(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`float32_to_key`."""
    keys = np.asarray(keys, dtype=np.uint32)
    positive = (keys & _SIGN) != 0
    return np.where(positive, keys ^ _SIGN, ~keys).astype(np.uint32).view(np.float32)


def _valid_pixels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(float32 scores, bool positives) of the non-void pixels, and the number of void pixels."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise ValueError(f"scores must be a real array, got {scores.dtype}")
    lab = labels.ravel()
    positive = lab == 1
    negative = lab == 0
    valid = positive | negative
    n_void = int(np.count_nonzero(lab == VOID))
    if n_void + int(np.count_nonzero(valid)) != lab.size:
        bad = np.setdiff1d(np.unique(lab), np.array([INLIER, ANOMALY, VOID]))
        raise ValueError(f"labels must be 0 (inlier), 1 (anomaly) or 255 (void); found {bad[:10]}")
    s = scores.ravel()[valid].astype(np.float32) + np.float32(0.0)  # copy; folds -0.0 onto +0.0
    if np.isnan(s).any():
        raise ValueError("scores contain NaN at non-void pixels")
    return s, positive[valid], n_void


def counts_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """Exact confusion counts of ``score >= threshold`` over non-void pixels (float32 scores)."""
    s, pos, _ = _valid_pixels(scores, labels)
    pred = s >= np.float32(threshold)
    tp = int(np.count_nonzero(pred & pos))
    fp = int(np.count_nonzero(pred & ~pos))
    n_pos = int(np.count_nonzero(pos))
    return {"tp": tp, "fp": fp, "fn": n_pos - tp, "tn": int(s.size - n_pos - fp)}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact step-sum AP of one score map (sort based, same as scikit-learn's
    ``average_precision_score`` on the float32 scores); NaN without positive pixels."""
    s, pos, _ = _valid_pixels(scores, labels)
    n_pos = int(np.count_nonzero(pos))
    if n_pos == 0:
        return float("nan")
    # one sort of (order-preserving key, class) pairs, as in PixelMetrics: faster than an
    # argsort of the floats, and the same distinct scores in the same (descending) order
    v = (float32_to_key(s).astype(np.uint64) << np.uint64(1)) | pos.astype(np.uint64)
    v.sort()
    k = v >> np.uint64(1)
    last = np.r_[np.flatnonzero(k[1:] != k[:-1]), k.size - 1]  # last index of each distinct score
    cum_pos = np.cumsum((v & np.uint64(1)).astype(np.int64))[last]
    above = v.size - np.r_[0, last[:-1] + 1]  # pixels scoring >= each distinct score
    tps = (n_pos - np.r_[0, cum_pos[:-1]])[::-1]  # descending score order
    fps = above[::-1] - tps
    dtp = np.diff(np.r_[0, tps])
    return float(np.sum(dtp * (tps / (tps + fps))) / n_pos)


def f1_from_counts(tp, fp, fn):
    """F1 = 2TP / (2TP + FP + FN), elementwise; NaN where the denominator is 0 (also used by the
    component metrics)."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def _rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    nan = float("nan")
    return {
        "tpr": tp / (tp + fn) if tp + fn else nan,
        "fpr": fp / (fp + tn) if fp + tn else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "f1": float(f1_from_counts(tp, fp, fn)),
    }


# ---------------------------------------------------------------- pixel metrics


def _coarsened(keys: np.ndarray, pos: np.ndarray, neg: np.ndarray,
               by: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique bins at a resolution ``by`` bits coarser, counts of merged bins summed."""
    if by == 0 or keys.size == 0:
        return keys, pos, neg
    k = keys >> np.uint32(by)
    starts = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    return k[starts], np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)


@dataclass(frozen=True)
class _Curve:
    thresholds: np.ndarray  # descending, float64 (values are float32-exact)
    tps: np.ndarray  # cumulative, int64
    fps: np.ndarray


class PixelMetrics:
    """Streaming pooled pixel metrics (AUPRC, AUROC, FPR95, best F1) of anomaly score maps.

    ``update(scores, labels)`` per frame, ``result()`` at any time. Memory: a preallocated table
    of ``max_bins`` (key, positives, negatives) entries (20 bytes each: 20 MiB by default),
    whatever the number of frames (see the module docstring for the design and its exactness).
    ``thresholds``: extra score thresholds whose confusion counts are tracked exactly (e.g. the
    model's calibrated threshold); reported in ``result()["at_thresholds"]``.
    """

    def __init__(self, max_bins: int = 1 << 20, thresholds: Iterable[float] = ()) -> None:
        if not 256 <= int(max_bins) <= 1 << 26:
            raise ValueError(f"max_bins must be within 256..2**26, got {max_bins}")
        self.max_bins = int(max_bins)
        self.shift = 0  # bins are key >> shift; grows only when max_bins would be exceeded
        self._keys = np.zeros(self.max_bins, dtype=np.uint32)
        self._pos = np.zeros(self.max_bins, dtype=np.int64)
        self._neg = np.zeros(self.max_bins, dtype=np.int64)
        self._n = 0
        self._fixed = [float(t) for t in thresholds]
        self._fixed_counts = np.zeros((len(self._fixed), 2), dtype=np.int64)  # tp, fp per threshold
        self.frames = 0
        self.frames_with_positives = 0
        self.void = 0

    @property
    def nbytes(self) -> int:
        """Size of the accumulator; constant, whatever the number of frames."""
        return int(self._keys.nbytes + self._pos.nbytes + self._neg.nbytes
                   + self._fixed_counts.nbytes)

    @property
    def bins_used(self) -> int:
        return self._n

    @property
    def relative_resolution(self) -> float:
        """Upper bound of the relative width of one bin (0.0: every distinct float32 kept)."""
        return 0.0 if self.shift == 0 else 2.0 ** (self.shift - 23)

    def _insert(self, keys: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        """Merge sorted unique bins (at the current shift) with their counts, then coarsen the
        resolution (shift += 1, adjacent bins pairwise merged) until ``max_bins`` holds them."""
        n = self._n
        table_k, table_p, table_n = self._keys[:n], self._pos[:n], self._neg[:n]
        idx = np.searchsorted(table_k, keys)
        hit = idx < n
        hit[hit] = table_k[idx[hit]] == keys[hit]
        table_p[idx[hit]] += pos[hit]  # indices unique: plain fancy-index add is safe
        table_n[idx[hit]] += neg[hit]
        new = ~hit
        if not new.any():
            return
        k = np.insert(table_k, idx[new], keys[new])
        p = np.insert(table_p, idx[new], pos[new])
        q = np.insert(table_n, idx[new], neg[new])
        while k.size > self.max_bins:
            k, p, q = _coarsened(k, p, q, 1)
            self.shift += 1
        self._n = k.size
        self._keys[:k.size], self._pos[:k.size], self._neg[:k.size] = k, p, q

    def _add_frame(self, s: np.ndarray, pos: np.ndarray) -> None:
        bins = float32_to_key(s) >> np.uint32(self.shift)
        # one sort of (bin, class) pairs gives the frame's bins and both counts
        v = (bins.astype(np.uint64) << np.uint64(1)) | pos.astype(np.uint64)
        v.sort()
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        u, cnt = v[starts], np.diff(np.r_[starts, v.size])
        k = (u >> np.uint64(1)).astype(np.uint32)
        is_pos = (u & np.uint64(1)).astype(bool)
        first = np.r_[True, k[1:] != k[:-1]]
        group = np.cumsum(first) - 1
        keys = k[first]
        p = np.zeros(keys.size, np.int64)
        q = np.zeros(keys.size, np.int64)
        p[group[is_pos]] = cnt[is_pos]
        q[group[~is_pos]] = cnt[~is_pos]
        self._insert(keys, p, q)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one frame: HxW scores (float) and HxW labels (uint8 0/1/255, void dropped)."""
        s, pos, n_void = _valid_pixels(scores, labels)
        if s.size:
            self._add_frame(s, pos)
        for i, t in enumerate(self._fixed):
            pred = s >= np.float32(t)
            tp = int(np.count_nonzero(pred & pos))
            self._fixed_counts[i] += (tp, int(np.count_nonzero(pred)) - tp)
        self.frames += 1
        self.frames_with_positives += bool(pos.any())
        self.void += n_void

    # -- pooling shards: the table depends only on the multiset of scores, not on their order
    #    or on how they were split, so a merge reproduces the single-pass table exactly
    def merge(self, other: "PixelMetrics") -> None:
        """Add another accumulator's pixels (a shard of the same evaluation), exactly.

        The single-pass table is the exact count of every ``key >> s*`` where ``s*`` is the
        smallest shift at which all the scores fit in ``max_bins`` (coarsening only ever happens
        when needed, and the number of distinct bins only grows with more frames). A shard's own
        shift is never above ``s*`` (it holds a subset of the scores), so both tables are brought
        to the larger shift and inserted, which coarsens further exactly as far as the single
        pass would have: the merged table, hence every metric, equals the single pass's."""
        if other.max_bins != self.max_bins or other._fixed != self._fixed:
            raise ValueError("merge needs accumulators with the same max_bins and thresholds, got "
                             f"{other.max_bins} / {other._fixed} vs {self.max_bins} / {self._fixed}")
        shift = max(self.shift, other.shift)
        if shift > self.shift:
            k, p, q = _coarsened(self._keys[:self._n], self._pos[:self._n], self._neg[:self._n],
                                 shift - self.shift)
            self._n, self.shift = k.size, shift
            self._keys[:k.size], self._pos[:k.size], self._neg[:k.size] = k, p, q
        k, p, q = _coarsened(other._keys[:other._n], other._pos[:other._n],
                             other._neg[:other._n], shift - other.shift)
        if k.size:
            self._insert(k.copy(), p.copy(), q.copy())
        self._fixed_counts += other._fixed_counts
        self.frames += other.frames
        self.frames_with_positives += other.frames_with_positives
        self.void += other.void

    def state(self) -> dict[str, np.ndarray]:
        """The accumulator as plain arrays (the used part of the table only): what a worker
        sends back and a resumable run stores (``np.savez``, read back without pickle)."""
        return {"keys": self._keys[:self._n].copy(), "pos": self._pos[:self._n].copy(),
                "neg": self._neg[:self._n].copy(), "fixed": np.asarray(self._fixed, np.float64),
                "fixed_counts": self._fixed_counts.copy(),
                "scalars": np.array([self.max_bins, self.shift, self.frames,
                                     self.frames_with_positives, self.void], np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "PixelMetrics":
        """Inverse of :meth:`state`; checks the arrays hold a well-formed table."""
        max_bins, shift, frames, with_pos, void = (int(v) for v in state["scalars"])
        out = cls(max_bins=max_bins, thresholds=[float(t) for t in state["fixed"]])
        keys = np.asarray(state["keys"], np.uint32)
        n = keys.size
        if (n > max_bins or not 0 <= shift <= 32 or state["pos"].shape != (n,)
                or state["neg"].shape != (n,) or (n > 1 and not np.all(keys[1:] > keys[:-1]))
                or state["fixed_counts"].shape != out._fixed_counts.shape):
            raise ValueError("not a pixel-metrics table: shapes, order or shift out of range")
        out._keys[:n], out._pos[:n], out._neg[:n] = keys, state["pos"], state["neg"]
        out._n, out.shift = n, shift
        out._fixed_counts[:] = state["fixed_counts"]
        out.frames, out.frames_with_positives, out.void = frames, with_pos, void
        return out

    @property
    def positives(self) -> int:
        return int(self._pos[:self._n].sum())

    @property
    def negatives(self) -> int:
        return int(self._neg[:self._n].sum())

    def _lower_edges(self, bins: np.ndarray) -> np.ndarray:
        """Smallest float32 of each bin (the -inf bin starts at -inf, not at a NaN pattern)."""
        keys = np.asarray(bins, dtype=np.uint32) << np.uint32(self.shift)
        return key_to_float32(np.maximum(keys, np.uint32(_NEG_INF_KEY)))

    def _curve(self) -> _Curve:
        n = self._n
        order = slice(None, None, -1)  # descending score
        thresholds = self._lower_edges(self._keys[:n][order]).astype(np.float64)
        return _Curve(thresholds, np.cumsum(self._pos[:n][order]), np.cumsum(self._neg[:n][order]))

    def at_threshold(self, threshold: float) -> dict:
        """Confusion counts and rates of ``score >= threshold``: exact for a threshold given to
        the constructor or one taken from this accumulator's curve (a bin's lower edge),
        otherwise rounded down to the bin containing it (``exact: False``)."""
        n_pos, n_neg = self.positives, self.negatives
        if float(threshold) in self._fixed:
            tp, fp = (int(v) for v in self._fixed_counts[self._fixed.index(float(threshold))])
            exact = True
        else:
            t32 = np.float32(threshold) + np.float32(0.0)
            if np.isnan(t32):
                raise ValueError("threshold is NaN")
            b = float32_to_key(np.array([t32]))[0] >> np.uint32(self.shift)
            n = self._n
            i = int(np.searchsorted(self._keys[:n], b))  # bins i.. hold scores >= bin b
            tp = int(self._pos[i:n].sum())  # bin b counted whole: the threshold is rounded down
            fp = int(self._neg[i:n].sum())
            exact = bool(i == n or self._keys[i] != b or self._lower_edges(b) == t32)
        out = {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": n_pos - tp,
               "tn": n_neg - fp, "exact": bool(exact)}
        out.update(_rates(tp, fp, n_pos - tp, n_neg - fp))
        return out

    def result(self) -> dict:
        """Metrics as fractions (0..1); NaN where undefined, with ``status`` saying why."""
        nan = float("nan")
        n_pos, n_neg = self.positives, self.negatives
        c = self._curve()
        out = {"auprc": nan, "auroc": nan, "fpr95": nan, "best_f1": nan,
               "best_f1_threshold": nan, "tpr95_threshold": nan}
        if n_pos == 0 and n_neg == 0:
            status = "empty"
        elif n_pos == 0:
            status = "no_positives"
        elif n_neg == 0:
            status = "no_negatives"
        else:
            status = "ok"
        if n_pos:
            tps, fps = c.tps.astype(np.float64), c.fps.astype(np.float64)
            precision = tps / (tps + fps)
            out["auprc"] = float(np.sum(np.diff(np.r_[0.0, tps]) * precision) / n_pos)
            f1 = 2 * tps / (tps + fps + n_pos)
            ix = int(np.argmax(f1))
            out["best_f1"] = float(f1[ix])
            out["best_f1_threshold"] = float(c.thresholds[ix])
        if n_pos and n_neg:
            tpr = np.r_[0.0, c.tps / n_pos]
            fpr = np.r_[0.0, c.fps / n_neg]
            out["auroc"] = float(np.trapezoid(tpr, fpr))
            i95 = int(np.searchsorted(tpr, 0.95))  # always < len: tpr ends at 1
            out["fpr95"] = float(fpr[i95])
            out["tpr95_threshold"] = float(c.thresholds[i95 - 1])
        out["status"] = status
        out["counts"] = {"positives": n_pos, "negatives": n_neg, "void": int(self.void),
                         "frames": int(self.frames),
                         "frames_with_positives": int(self.frames_with_positives),
                         "bins_used": int(self._n), "max_bins": self.max_bins,
                         "shift": self.shift, "relative_resolution": self.relative_resolution}
        out["at_thresholds"] = [self.at_threshold(t) for t in self._fixed]
        return out

    def curves(self, max_points: int = 1000) -> dict[str, np.ndarray]:
        """PR and ROC curves for plotting, downsampled to about ``max_points`` points (kept:
        points evenly spaced in recall / FPR and in rank, plus both ends).

        ``recall``, ``precision``, ``pr_thresholds``: by descending threshold (rising recall);
        ``fpr``, ``tpr``, ``roc_thresholds``: the same points with (0, 0) at threshold +inf first.
        Empty arrays when the curve is undefined (no positives, or no negatives for the ROC)."""
        c = self._curve()
        n_pos, n_neg = self.positives, self.negatives
        empty = np.zeros(0)
        out = {k: empty for k in ("recall", "precision", "pr_thresholds", "fpr", "tpr",
                                  "roc_thresholds")}
        n = c.thresholds.size
        if n == 0 or n_pos == 0:
            return out
        recall = c.tps / n_pos
        fpr = c.fps / n_neg if n_neg else np.zeros(n)
        k = max(2, int(max_points) // 3)
        grid = np.linspace(0.0, 1.0, k)
        idx = np.unique(np.clip(np.r_[np.searchsorted(recall, grid), np.searchsorted(fpr, grid),
                                      np.linspace(0, n - 1, k).round().astype(np.int64), 0, n - 1],
                                0, n - 1))
        out["recall"] = recall[idx]
        out["precision"] = c.tps[idx] / (c.tps[idx] + c.fps[idx])
        out["pr_thresholds"] = c.thresholds[idx]
        if n_neg:
            out["fpr"] = np.r_[0.0, fpr[idx]]
            out["tpr"] = np.r_[0.0, recall[idx]]
            out["roc_thresholds"] = np.r_[np.inf, c.thresholds[idx]]
        return out
