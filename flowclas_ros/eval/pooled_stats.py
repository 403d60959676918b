"""Pooled evaluation statistics: what the metrics need from every frame, mergeable exactly.

The evaluator's first pass (:class:`flowclas_ros.eval.evaluate.Evaluation`) and every shard of a
fleet run (:mod:`flowclas_ros.eval.fleet`) feed their (heatmap, label) pairs into a
:class:`PooledStats`. Shards computed in other processes or on other machines are pooled with
:meth:`PooledStats.merge`, never by averaging per-shard numbers, and the pooled accumulators are
the ones a single pass over all frames would hold, bit for bit:

* pixel metrics (AUPRC, AUROC, FPR95, best F1, the counts at the model threshold): the score table
  of :class:`~flowclas_ros.eval.pixel_metrics.PixelMetrics` depends only on the multiset of
  scores (see its ``merge``);
* recall by obstacle size and by obstacle contrast (frames added with their RGB), component
  counts at the model threshold: integer counts and exact rational sums;
* image AUROC, the domain-shift alarm, the per-frame times: per-frame lists, appended in shard
  order (the order of a single pass over the shards one after the other).

Component metrics of a pooled run are taken at the model's own threshold, known before the first
frame, so a shard needs one pass and keeps no heatmap: the single-process evaluator takes them at
the pooled pixel best-F1 threshold, known only after every frame, which needs every heatmap
again (a cache of every frame, or a second inference pass). ``Evaluation(...,
component_threshold="model")`` is the single-process run that a pooled run equals exactly.

:func:`metrics_dict` assembles the metrics dict both report, so the keys and their meaning are
defined once. Percentages (0-100), thresholds in model score units, NaN where undefined.
"""
from __future__ import annotations

import json
import math
import statistics
from typing import Any, Optional

import numpy as np

from flowclas_ros.data.files import DatasetError
from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.component_metrics import ComponentMetrics
from flowclas_ros.eval.image_metrics import ImageMetrics
from flowclas_ros.eval.pixel_metrics import PixelMetrics, average_precision, counts_at_threshold
from flowclas_ros.eval.size_recall import ContrastRecall, SizeRecall
from flowclas_ros.runtime.labels import ANOMALY, VOID
from flowclas_ros.runtime.scene_alarm import flagged_share, scene_summary

__all__ = ["PooledStats", "frame_f1", "metrics_dict", "model_meta", "pct"]

SUSPECT_LABELS_SHOWN = 10  # label names listed in the 0/255 warning


def pct(v: Optional[float]) -> float:
    return float(v) * 100.0 if v is not None and math.isfinite(v) else float("nan")


def frame_f1(c: dict[str, int]) -> float:
    """Pixel F1 of one frame in percent; no anomaly and no false alarm is a perfect frame."""
    den = 2 * c["tp"] + c["fp"] + c["fn"]
    return 100.0 * (2 * c["tp"] / den if den else 1.0)


def model_meta(detector: Any) -> dict:
    """What the metrics dict says about the model: path, version, providers, threshold."""
    return {"model": str(detector.model_path), "model_version": detector.info.model_version,
            "providers": list(detector.providers), "threshold": float(detector.threshold)}


class PooledStats:
    """Streaming, mergeable statistics of (heatmap, label) pairs at one model threshold.

    ``add`` per frame; ``merge`` pools another shard (same settings); ``state`` /
    ``from_state`` turn it into plain arrays and JSON for transport and for a resumable run's
    manifest (no pickle on disk). ``components``: also take the component metrics (and the
    per-frame rows) at the model threshold in the same pass, as a pooled run does. Memory: the
    pixel table (``max_bins``, 20 MiB by default) plus a few numbers per frame.
    """

    def __init__(self, threshold: float, min_pred_area: int = MIN_PRED_AREA,
                 min_gt_area: int = MIN_GT_AREA,
                 max_bins: int = 1 << 20, image_top_k: float = 0.01,
                 components: bool = False) -> None:
        self.threshold = float(threshold)
        self.pixel = PixelMetrics(max_bins=max_bins, thresholds=(self.threshold,))
        self.image = ImageMetrics(top_k=image_top_k)
        self.sizes = SizeRecall(self.threshold)
        self.contrasts = ContrastRecall(self.threshold)  # recall by contrast to the surroundings
        self.frames_with_rgb = 0  # contrast needs the frame: frames added without one are not in it
        self.components = (ComponentMetrics(min_pred_area=min_pred_area, min_gt_area=min_gt_area)
                           if components else None)
        self.min_pred_area, self.min_gt_area = int(min_pred_area), int(min_gt_area)
        self.flagged_shares: list[float] = []  # the node's domain-shift alarm input, per frame
        self.image_index: list[int] = []  # per frame: its entry in `image`, -1 when skipped
        self.times_ms: list[float] = []
        self.ids: list[str] = []
        # label coding checks: frames with void pixels, with anomaly pixels, with both
        self.void_frames = 0
        self.anomaly_frames_with_void = 0
        self.void_only_ids: list[str] = []  # void but no anomaly: a 0/255 mask read as 0/1/255?

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, frame_id: str, heat: np.ndarray, label: np.ndarray, ms: float,
            rgb: Optional[np.ndarray] = None) -> Optional[dict]:
        """One frame: HxW float32 heatmap, HxW uint8 0/1/255 label, inference ms and, for recall
        by obstacle contrast, the HxWx3 uint8 RGB frame. Returns the frame's row at the model
        threshold when ``components`` is on, else None."""
        if np.isnan(heat).any():
            raise RuntimeError(f"model produced NaN scores on frame {frame_id!r}")
        self.pixel.update(heat, label)
        self.sizes.update(heat, label)
        if rgb is not None and rgb.shape[:2] == label.shape:
            self.contrasts.update(heat, label, rgb)
            self.frames_with_rgb += 1
        self.flagged_shares.append(flagged_share(heat, self.threshold))
        has_void, has_anomaly = bool(np.any(label == VOID)), bool(np.any(label == ANOMALY))
        self.void_frames += has_void
        self.anomaly_frames_with_void += has_void and has_anomaly
        if has_void and not has_anomaly:
            self.void_only_ids.append(str(frame_id))
        n_images = len(self.image.max_scores)
        self.image_index.append(n_images if self.image.update(heat, label) is not None else -1)
        self.ids.append(str(frame_id))
        self.times_ms.append(float(ms))
        if self.components is None:
            return None
        fc = self.components.update(heat, label, self.threshold)
        c = counts_at_threshold(heat, label, self.threshold)
        valid = label != VOID
        n_anom = int(np.count_nonzero(label == ANOMALY))
        return {"id": str(frame_id), "f1": frame_f1(c), "f1_model": frame_f1(c),
                "ap": pct(average_precision(heat, label)) if n_anom else float("nan"),
                "anomaly_pixels": n_anom, "valid_pixels": int(np.count_nonzero(valid)),
                "max_score": float(heat[valid].max()) if valid.any() else float("nan"),
                "gt_components": int(fc.siou.size), "pred_components": int(fc.ppv.size),
                "flagged_share": self.flagged_shares[-1], "ms": float(ms)}

    # -- pooling
    def merge(self, other: "PooledStats") -> None:
        """Pool another shard's statistics after this one's (see the module docstring)."""
        if other.threshold != self.threshold or (other.components is None) != (self.components is None):
            raise ValueError("merge needs shards scored at the same threshold and settings")
        self.pixel.merge(other.pixel)
        self.image.merge(other.image)
        self.sizes.merge(other.sizes)
        self.contrasts.merge(other.contrasts)
        self.frames_with_rgb += other.frames_with_rgb
        if self.components is not None:
            self.components.merge(other.components)
        self.flagged_shares += other.flagged_shares
        offset = len(self.image.max_scores) - len(other.image.max_scores)  # image merged first
        self.image_index += [i + offset if i >= 0 else -1 for i in other.image_index]
        self.times_ms += other.times_ms
        self.ids += other.ids
        self.void_frames += other.void_frames
        self.anomaly_frames_with_void += other.anomaly_frames_with_void
        self.void_only_ids += other.void_only_ids

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able dict): the whole state, for ``np.savez`` + JSON."""
        arrays = {f"pixel_{k}": v for k, v in self.pixel.state().items()}
        img = self.image
        arrays.update({"flagged_shares": np.asarray(self.flagged_shares, np.float64),
                       "times_ms": np.asarray(self.times_ms, np.float64),
                       "image_max": np.asarray(img.max_scores, np.float64),
                       "image_topk": np.asarray(img.topk_scores, np.float64),
                       "image_anomalous": np.asarray(img.anomalous, bool),
                       "image_scored": np.asarray([i >= 0 for i in self.image_index], bool)})
        meta = {"threshold": self.threshold, "min_pred_area": self.min_pred_area,
                "min_gt_area": self.min_gt_area, "image_top_k": img.top_k,
                "image_skipped": img.skipped, "sizes": self.sizes.counts, "ids": self.ids,
                "contrasts": self.contrasts.counts, "frames_with_rgb": self.frames_with_rgb,
                "components": self.components.state() if self.components is not None else None,
                "void_frames": self.void_frames,
                "anomaly_frames_with_void": self.anomaly_frames_with_void,
                "void_only_ids": self.void_only_ids}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> "PooledStats":
        """Inverse of :meth:`state` (ValueError on arrays that do not fit together)."""
        out = cls(meta["threshold"], meta["min_pred_area"], meta["min_gt_area"],
                  image_top_k=meta["image_top_k"], components=meta["components"] is not None)
        out.pixel = PixelMetrics.from_state({k[len("pixel_"):]: v for k, v in arrays.items()
                                             if k.startswith("pixel_")})
        if out.pixel._fixed != [out.threshold]:
            raise ValueError("pixel table tracked another threshold than the shard's")
        if meta["components"] is not None:
            out.components = ComponentMetrics.from_state(meta["components"])
        n = len(meta["ids"])
        scored = np.asarray(arrays["image_scored"], bool)
        n_img = int(scored.sum())
        if (arrays["flagged_shares"].shape != (n,) or arrays["times_ms"].shape != (n,)
                or scored.shape != (n,) or arrays["image_max"].shape != (n_img,)
                or arrays["image_topk"].shape != (n_img,)
                or arrays["image_anomalous"].shape != (n_img,)):
            raise ValueError("per-frame arrays of a shard do not match its frame count")
        out.ids = [str(i) for i in meta["ids"]]
        out.flagged_shares = arrays["flagged_shares"].tolist()
        out.times_ms = arrays["times_ms"].tolist()
        img = out.image
        img.max_scores = arrays["image_max"].tolist()
        img.topk_scores = arrays["image_topk"].tolist()
        img.anomalous = arrays["image_anomalous"].tolist()
        img.skipped = int(meta["image_skipped"])
        out.image_index = (np.cumsum(scored) - 1).tolist()
        out.image_index = [i if s else -1 for i, s in zip(out.image_index, scored)]
        for name, counts in meta["sizes"].items():
            if name not in out.sizes.counts:
                raise ValueError(f"unknown size bucket {name!r}")
            out.sizes.counts[name] = {k: int(counts[k]) for k in out.sizes.counts[name]}
        for name, counts in meta.get("contrasts", {}).items():
            if name not in out.contrasts.counts:
                raise ValueError(f"unknown contrast bucket {name!r}")
            out.contrasts.counts[name] = {k: int(counts[k]) for k in out.contrasts.counts[name]}
        out.frames_with_rgb = int(meta.get("frames_with_rgb", 0))
        out.void_frames = int(meta["void_frames"])
        out.anomaly_frames_with_void = int(meta["anomaly_frames_with_void"])
        out.void_only_ids = [str(i) for i in meta["void_only_ids"]]
        return out

    def save(self, path: Any) -> None:
        """``path`` (.npz): the arrays plus the JSON state, readable without pickle."""
        arrays, meta = self.state()
        with open(path, "wb") as f:
            np.savez_compressed(f, meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                                **arrays)

    @classmethod
    def load(cls, path: Any) -> "PooledStats":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta_json"}
            meta = json.loads(z["meta_json"].tobytes().decode())
        return cls.from_state(arrays, meta)

    def image_score(self, i: int, rule: str = "max") -> float:
        """The i-th frame's image score by ``rule`` ("max" or "topk"); NaN without valid pixel."""
        j = self.image_index[i]
        if j < 0:
            return float("nan")
        return (self.image.max_scores if rule == "max" else self.image.topk_scores)[j]

    # -- results
    def label_warnings(self, describe_ids: Any = None) -> list[str]:
        """Frames whose void (255) looks like an obstacle coded 0/255: void but no anomaly
        pixel, in a split whose anomaly frames never use void. ``describe_ids(ids)``: how to
        name those frames (e.g. their label files)."""
        if not self.void_only_ids or self.pixel.frames_with_positives == 0 \
                or self.anomaly_frames_with_void:
            return []
        ids = self.void_only_ids
        names = (describe_ids or (lambda x: x))(ids[:SUSPECT_LABELS_SHOWN])
        more = f" and {len(ids) - SUSPECT_LABELS_SHOWN} more" if len(ids) > SUSPECT_LABELS_SHOWN else ""
        return [f"{len(ids)} labels hold void (255) but no anomaly (1) pixel while the "
                f"{self.pixel.frames_with_positives} labels with anomalies hold no void: if they "
                f"are 0/255 masks, their obstacles were scored as void (not counted): "
                f"{', '.join(names)}{more}; recode 255 to 1 in those files"]

    def check_coding(self, desc: str) -> None:
        """Refuse a split with void pixels but not one anomaly pixel: the signature of 0/255
        binary masks read in the 0/1/255 coding, where every anomaly becomes void and the
        metrics would silently describe the inliers alone."""
        counts = self.pixel
        if counts.positives == 0 and counts.void > 0:
            raise DatasetError(
                f"{desc}: no anomaly pixel (1) in {counts.frames} frames, but {counts.void} void "
                f"(255) pixels in {self.void_frames} of them: labels coded 0/255 (the binary-mask "
                "convention) read as 0 inlier / 1 anomaly / 255 void turn every anomaly into void. "
                "Read them with --layout-opt coding=mask_0_255 (evaluate), or recode 255 to 1")

    def result(self, model: dict, desc: str, layout: str, image_score: str = "max",
               components: Optional[tuple[dict, float, str]] = None) -> dict:
        """The metrics dict. ``components``: (ComponentMetrics result, threshold, source) of a
        second pass; default: this pass's components at the model threshold."""
        if not self.ids:
            raise ValueError("no frames to evaluate")
        pix = self.pixel.result()
        self.check_coding(desc)
        if components is None:
            if self.components is None:
                raise ValueError("no component metrics: built without components=True")
            components = (self.components.result(), self.threshold, "model")
        cres, comp_threshold, comp_source = components
        result = metrics_dict(pix, cres, comp_threshold, comp_source, model, desc, layout,
                              self.times_ms, self.image.result(), image_score)
        result["recall_by_size"] = self.sizes.result()
        if self.frames_with_rgb:
            result["recall_by_contrast"] = self.contrasts.result()
        result["scene"] = scene_summary(self.flagged_shares)
        return result


def metrics_dict(pix: dict, cres: dict, comp_threshold: float, comp_source: str, model: dict,
                 desc: str, layout: str, times_ms: list[float], ires: Optional[dict] = None,
                 image_score: str = "max") -> dict:
    """The evaluator's metrics dict from the pixel, component and image results."""
    counts = pix["counts"]
    at_model = pix["at_thresholds"][0]
    warnings = []
    if pix["status"] == "no_positives":
        warnings.append("no anomaly pixels: AUPRC, AUROC, FPR95 and best F1 are undefined (NaN); "
                        "components thresholded at the model threshold")
    elif pix["status"] == "no_negatives":
        warnings.append("no inlier pixels: AUROC and FPR95 are undefined (NaN)")
    if cres["counts"]["gt_components"] == 0:
        warnings.append("no ground-truth component: sIoU is undefined (NaN)")
    if cres["counts"]["pred_components"] == 0:
        warnings.append("no predicted component: PPV is undefined (NaN)")
    frames = counts["frames"]
    anomaly_frames = counts["frames_with_positives"]
    result: dict[str, Any] = {
        "auprc": pct(pix["auprc"]), "fpr95": pct(pix["fpr95"]), "auroc": pct(pix["auroc"]),
        "mean_f1": pct(cres["mean_f1"]), "siou": pct(cres["siou"]), "ppv": pct(cres["ppv"]),
        "best_f1": pct(pix["best_f1"]), "best_f1_threshold": pix["best_f1_threshold"],
        "tpr95_threshold": pix["tpr95_threshold"],
        "frames": frames, "anomaly_frames": anomaly_frames,
        "frames_without_anomaly_pixels": frames - anomaly_frames,
        "ms_per_frame": float(statistics.median(times_ms)),
        "ms_per_frame_p95": float(np.percentile(times_ms, 95)),
        "model": model["model"], "model_version": model["model_version"],
        "providers": list(model["providers"]), "data": desc, "layout": layout,
        "status": pix["status"],
        "pixels": {"anomaly": counts["positives"], "inlier": counts["negatives"],
                   "void": counts["void"]},
        "at_model_threshold": {
            "threshold": model["threshold"], "tpr": pct(at_model["tpr"]),
            "fpr": pct(at_model["fpr"]), "precision": pct(at_model["precision"]),
            "f1": pct(at_model["f1"]), "tp": at_model["tp"], "fp": at_model["fp"],
            "fn": at_model["fn"], "tn": at_model["tn"]},
        "components": {
            "threshold": comp_threshold, "threshold_source": comp_source,
            "siou_thresholds": cres["thresholds"], "f1": [pct(v) for v in cres["f1"]],
            "tp": cres["tp"], "fn": cres["fn"], "fp": cres["fp"], **cres["counts"]},
        "score_resolution": counts["relative_resolution"],  # 0: exact (every distinct score)
        "warnings": warnings,
    }
    if ires is not None:
        result["image_auroc"] = pct(ires[f"auroc_{image_score}"])
        result["image"] = {"score": image_score, "top_k": ires["top_k"],
                           "auroc_max": pct(ires["auroc_max"]), "auroc_topk": pct(ires["auroc_topk"]),
                           "images": ires["images"], "anomalous": ires["anomalous"],
                           "normal": ires["normal"], "skipped": ires["skipped"]}
    return result
