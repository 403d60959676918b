"""Evaluator: a labelled dataset through the runtime `Detector` into the SMIYC metrics dict.

One place computes the numbers for every caller (`evaluate` on a dataset, replay on a bag), so
they agree; the report directory and summary text are :mod:`flowclas_ros.eval.report`'s job.

Two passes with bounded memory:
  1. every frame goes through ``Detector.heatmap`` (the one runtime path); the float32 heatmap
     feeds the streaming :class:`~flowclas_ros.eval.pixel_metrics.PixelMetrics` and is cached to a temporary
     directory as float16 ``.npy`` (float32 for a frame whose scores overflow float16), with its
     label;
  2. the component metrics need the pixel best-F1 threshold, known only after pass 1: they run
     over the cache, together with the per-frame scores. The cache is deleted at the end.

Component metrics and per-frame scores therefore threshold float16-rounded scores (relative
rounding 2**-11); a pixel within that of the threshold may land on the other side than in the
float32 pixel metrics. The pixel metrics themselves use the exact float32 heatmaps.

Image level (MVTec AD / CL-flow): each frame's image score (max, or top-k mean, of its float32
heatmap over non-void pixels) and the exact image AUROC (``image_auroc``, by the rule chosen with
``image_score``; both rules under ``image``), anomalous image = any anomaly pixel; NaN when the
dataset has only anomalous or only normal frames (e.g. road-obstacle sets; no warning: the
``image`` counts say why).

Percentages (0-100) in the returned dict, JSON and report; thresholds in model score units.
Undefined values are NaN in the returned dict and ``null`` in JSON.
"""
from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.report import write_report
from flowclas_ros.runtime.labels import VOID
from flowclas_ros.runtime.scene_alarm import flagged_share, scene_summary

if TYPE_CHECKING:
    import numpy as np

# Only the standard library at import time: `flowclas-ros` imports this module to register the
# verb, so numpy, OpenCV, onnxruntime and matplotlib are imported inside the functions.

__all__ = ["IMAGE_SCORES", "Evaluation", "evaluate"]

IMAGE_SCORES = ("max", "topk")  # image-level score rules (image_metrics.image_score)


@dataclass
class _EvalItem:
    id: str
    sample: Any  # Sample, or (id, rgb, label)


def _eval_items(data: Any, layout: str, max_frames: Optional[int],
               layout_options: Optional[dict] = None) -> tuple[list[_EvalItem], str]:
    """Samples from a dataset directory or a sequence of `Sample` / (id, rgb, label) tuples."""
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.data.labels import Sample
    from flowclas_ros.data.layouts import load_layout

    if isinstance(data, (str, os.PathLike)):
        samples: Sequence[Any] = load_layout(layout, data, **(layout_options or {}))
        desc = str(data)
    else:
        samples = list(data)
        desc = f"<{len(samples)} samples>"
    frames = []
    for s in samples:
        if isinstance(s, Sample):
            if not s.has_label:
                raise DatasetError(f"cannot evaluate without labels: image {s.image_path} has none")
            frames.append(_EvalItem(s.id, s))
        elif isinstance(s, tuple) and len(s) == 3:
            frames.append(_EvalItem(str(s[0]), s))
        else:
            raise TypeError("samples must be flowclas_ros.data.layouts.Sample or (id, rgb, label) "
                            f"tuples, got {type(s).__name__}")
    if max_frames is not None:
        frames = frames[:max(0, int(max_frames))]
    if not frames:
        raise DatasetError(f"no frames to evaluate in {desc}")
    return frames, desc


def _read(frame: _EvalItem, with_label: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    import numpy as np

    from flowclas_ros.data.files import DatasetError, read_image_rgb
    from flowclas_ros.data.labels import Sample, read_sample_label

    s = frame.sample
    if isinstance(s, Sample):  # any layout's label coding, decoded to 0/1/255
        rgb = read_image_rgb(s.image_path)
        return rgb, (read_sample_label(s, expected_shape=rgb.shape[:2]) if with_label else None)
    rgb, label = np.asarray(s[1]), np.asarray(s[2])
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DatasetError(f"frame {frame.id!r}: image must be HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    if label.shape != rgb.shape[:2] or label.dtype != np.uint8:
        raise DatasetError(f"frame {frame.id!r}: label must be {rgb.shape[:2]} uint8, "
                           f"got {label.dtype} {label.shape}")
    return rgb, label


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the model extra; the evaluator runs without it
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="frame", file=sys.stderr, leave=False)


def _pct(v: float) -> float:
    return float(v) * 100.0 if v is not None and math.isfinite(v) else float("nan")


def evaluate(data: Any, model_path: Optional[str | os.PathLike] = None,
             out_dir: Optional[str | os.PathLike] = None, layout: str = "generic",
             providers: Sequence[str] = ("cpu",), min_pred_area: int = MIN_PRED_AREA,
             min_gt_area: int = MIN_GT_AREA, max_frames: Optional[int] = None,
             progress: bool = True, max_bins: int = 1 << 20, image_score: str = "max",
             image_top_k: float = 0.01, layout_options: Optional[dict] = None,
             regions: str = "model") -> dict:
    """Evaluate a model on a labelled dataset; returns the metrics dict (see module docstring).

    ``data``: a dataset root read with ``load_layout(layout, data)``, or a sequence of `Sample`
    or ``(id, rgb uint8 HxWx3, label uint8 HxW)`` tuples. ``model_path``: ONNX file or checkpoint
    (None: the shipped default). ``out_dir``: report directory (None: metrics only).
    ``min_pred_area`` / ``min_gt_area``: component size filters (eval/component_filters.py).
    ``image_score``: "max" or "topk" (mean of the top ``image_top_k`` fraction of pixels), the
    rule behind ``image_auroc``. ``layout_options``: keyword options of the layout reader, e.g.
    ``{"category": "bottle", "split": "test"}`` for ``mvtec``. ``regions``: the region-evidence
    stage, "model" (the one the model file carries) or "off" (runtime/regions.py).
    """
    from flowclas_ros.deploy.open_model import open_detector

    frames, desc = _eval_items(data, layout, max_frames, layout_options)
    det = open_detector(model_path, providers=providers, regions=regions)
    with Evaluation(det, min_pred_area, min_gt_area, max_bins, image_score, image_top_k) as ev:
        for fr in _progress(frames, len(frames), "evaluate", progress):
            rgb, label = _read(fr)
            t0 = time.perf_counter()
            heat = det.heatmap(rgb, "rgb8")
            ev.add(fr.id, heat, label, (time.perf_counter() - t0) * 1e3, rgb)
        result = ev.finish(desc, layout, progress)
        if out_dir is not None:
            ev.write_report(out_dir, result, lambda i: _read(frames[i], with_label=False)[0])
        return result


class Evaluation:
    """The evaluator's streaming core: metrics from (heatmap, label) pairs fed one at a time.

    `evaluate` feeds it a labelled dataset through `Detector.heatmap`; `flowclas_ros.eval.replay`
    feeds it the heatmaps the node's frame pipeline made on a bag, so both report the same
    metrics, per-frame scores and report files. `add` is pass 1 (pixel metrics + heatmap/label
    cache, see the module docstring); `finish` is pass 2 and returns the metrics dict, leaving the
    per-frame scores in `per_frame`; `write_report` writes the report directory. A context
    manager: the cache is deleted on exit.
    """

    def __init__(self, detector: Any, min_pred_area: int = MIN_PRED_AREA, min_gt_area: int = MIN_GT_AREA,
                 max_bins: int = 1 << 20, image_score: str = "max", image_top_k: float = 0.01) -> None:
        from flowclas_ros.eval.image_metrics import ImageMetrics
        from flowclas_ros.eval.pixel_metrics import PixelMetrics
        from flowclas_ros.eval.size_recall import ContrastRecall, SizeRecall

        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {image_score!r}")
        self.detector = detector  # a runtime Detector: its threshold, model and providers
        self.min_pred_area, self.min_gt_area = int(min_pred_area), int(min_gt_area)
        self.pixel = PixelMetrics(max_bins=max_bins, thresholds=(detector.threshold,))
        self.image = ImageMetrics(top_k=image_top_k)  # image scores from the float32 heatmaps
        self.sizes = SizeRecall(detector.threshold)  # recall at the model threshold by obstacle size
        self.contrasts = ContrastRecall(detector.threshold)  # ... and by contrast to its ring
        self.frames_with_rgb = 0  # contrast needs the frame: frames added without one are not in it
        self.flagged_shares: list[float] = []  # the node's domain-shift alarm input, per frame
        self.void_frames = 0  # frames with void pixels: with no anomaly pixel, a coding mix-up
        self.image_score = image_score
        self.image_rows: list[Optional[dict]] = []
        self.ids: list[str] = []
        self.times_ms: list[float] = []
        self.per_frame: list[dict] = []  # set by finish()
        self.threshold: Optional[float] = None  # the component threshold, set by finish()
        self.cache = Path(tempfile.mkdtemp(prefix="flowclas_eval_"))

    def __len__(self) -> int:
        return len(self.ids)

    def __enter__(self) -> "Evaluation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def add(self, frame_id: str, heat: np.ndarray, label: np.ndarray, ms: float,
            rgb: Optional[np.ndarray] = None) -> None:
        """Pass 1 for one frame: HxW float32 heatmap, HxW uint8 0/1/255 label, inference ms and,
        for recall by obstacle contrast, the HxWx3 uint8 RGB frame."""
        import numpy as np

        if np.isnan(heat).any():
            raise RuntimeError(f"model produced NaN scores on frame {frame_id!r}")
        i = len(self.ids)
        self.pixel.update(heat, label)
        self.sizes.update(heat, label)
        if rgb is not None and rgb.shape[:2] == label.shape:
            self.contrasts.update(heat, label, rgb)
            self.frames_with_rgb += 1
        self.flagged_shares.append(flagged_share(heat, self.detector.threshold))
        self.void_frames += bool(np.any(label == VOID))
        self.image_rows.append(self.image.update(heat, label))
        h16 = heat.astype(np.float16)  # float32 only if a finite score overflows float16
        overflow = np.count_nonzero(np.isfinite(h16)) != np.count_nonzero(np.isfinite(heat))
        np.save(self.cache / f"{i:07d}_s.npy", heat if overflow else h16)
        np.save(self.cache / f"{i:07d}_l.npy", label)
        self.ids.append(str(frame_id))
        self.times_ms.append(float(ms))

    def cached(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th frame's cached heatmap (float32 again) and label."""
        import numpy as np

        return (np.load(self.cache / f"{i:07d}_s.npy").astype(np.float32),
                np.load(self.cache / f"{i:07d}_l.npy"))

    def finish(self, desc: str, layout: str, progress: bool = False) -> dict:
        """Pass 2 (component metrics, per-frame scores) and the metrics dict."""
        import numpy as np

        from flowclas_ros.eval.component_metrics import ComponentMetrics
        from flowclas_ros.eval.pixel_metrics import average_precision, counts_at_threshold

        if not self.ids:
            raise ValueError("no frames to evaluate")
        det = self.detector
        pix = self.pixel.result()
        _check_label_coding(pix["counts"], self.void_frames, desc)
        at_model = pix["at_thresholds"][0]

        comp_threshold, comp_source = pix["best_f1_threshold"], "pixel_best_f1"
        if not math.isfinite(comp_threshold):
            comp_threshold, comp_source = det.threshold, "model"  # no anomaly pixel: no best F1
        comp = ComponentMetrics(min_pred_area=self.min_pred_area, min_gt_area=self.min_gt_area)

        per_frame = []
        for i, fid in enumerate(_progress(self.ids, len(self.ids), "components", progress)):
            heat, label = self.cached(i)
            fc = comp.update(heat, label, comp_threshold)
            c = counts_at_threshold(heat, label, comp_threshold)
            cm = counts_at_threshold(heat, label, det.threshold)  # what the robot flags
            valid = label != VOID
            n_anom = int(np.count_nonzero(label == 1))
            per_frame.append({
                "index": i, "id": fid,
                "f1": _frame_f1(c), "f1_model": _frame_f1(cm),
                "ap": _pct(average_precision(heat, label)) if n_anom else float("nan"),
                "anomaly_pixels": n_anom, "valid_pixels": int(np.count_nonzero(valid)),
                "max_score": float(heat[valid].max()) if valid.any() else float("nan"),
                "gt_components": int(fc.siou.size), "pred_components": int(fc.ppv.size),
                "image_score": (self.image_rows[i][self.image_score] if self.image_rows[i]
                                else float("nan")),
                "ms": self.times_ms[i],
            })
        self.per_frame, self.threshold = per_frame, comp_threshold
        result = _assemble(pix, at_model, comp.result(), comp_threshold, comp_source, det, desc,
                           layout, self.times_ms, self.pixel.frames_with_positives,
                           self.image.result(), self.image_score)
        result["recall_by_size"] = self.sizes.result()
        if self.frames_with_rgb:
            result["recall_by_contrast"] = self.contrasts.result()
        result["scene"] = scene_summary(self.flagged_shares)
        return result

    def write_report(self, out_dir: str | os.PathLike, result: dict,
                     read_rgb: Callable[[int], np.ndarray]) -> None:
        """Curves, per_frame.csv, montages and metrics.json (``result`` plus ``report``) in
        ``out_dir``, after `finish`; ``read_rgb(i)`` is the RGB frame of the i-th `add`."""
        if self.threshold is None:
            raise RuntimeError("write_report needs finish() first")
        write_report(out_dir, result, self.pixel, self.per_frame, read_rgb, self.cached,
                     self.detector.threshold, self.min_pred_area)


def _check_label_coding(counts: dict, void_frames: int, desc: str) -> None:
    """Refuse a split with void pixels but not one anomaly pixel: the signature of 0/255 binary
    masks read in the 0/1/255 coding, where every anomaly becomes void and the metrics would
    silently describe the inliers alone."""
    from flowclas_ros.data.files import DatasetError

    if counts["positives"] == 0 and counts["void"] > 0:
        raise DatasetError(
            f"{desc}: no anomaly pixel (1) in {counts['frames']} frames, but {counts['void']} void "
            f"(255) pixels in {void_frames} of them: labels coded 0/255 (the binary-mask "
            "convention) read as 0 inlier / 1 anomaly / 255 void turn every anomaly into void. "
            "Read them with --layout-opt coding=mask_0_255 (evaluate), or recode 255 to 1")


def _frame_f1(c: dict[str, int]) -> float:
    """Pixel F1 of one frame in percent; no anomaly and no false alarm is a perfect frame."""
    den = 2 * c["tp"] + c["fp"] + c["fn"]
    return 100.0 * (2 * c["tp"] / den if den else 1.0)


def _assemble(pix: dict, at_model: dict, cres: dict, comp_threshold: float, comp_source: str,
              det: Any, desc: str, layout: str, times_ms: list[float],
              anomaly_frames: int, ires: Optional[dict] = None, image_score: str = "max") -> dict:
    import numpy as np

    counts = pix["counts"]
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
    result: dict[str, Any] = {
        "auprc": _pct(pix["auprc"]), "fpr95": _pct(pix["fpr95"]), "auroc": _pct(pix["auroc"]),
        "mean_f1": _pct(cres["mean_f1"]), "siou": _pct(cres["siou"]), "ppv": _pct(cres["ppv"]),
        "best_f1": _pct(pix["best_f1"]), "best_f1_threshold": pix["best_f1_threshold"],
        "tpr95_threshold": pix["tpr95_threshold"],
        "frames": frames, "anomaly_frames": anomaly_frames,
        "frames_without_anomaly_pixels": frames - anomaly_frames,
        "ms_per_frame": float(statistics.median(times_ms)),
        "ms_per_frame_p95": float(np.percentile(times_ms, 95)),
        "model": str(det.model_path), "model_version": det.info.model_version,
        "providers": list(det.providers), "data": desc, "layout": layout,
        "status": pix["status"],
        "pixels": {"anomaly": counts["positives"], "inlier": counts["negatives"],
                   "void": counts["void"]},
        "at_model_threshold": {
            "threshold": det.threshold, "tpr": _pct(at_model["tpr"]),
            "fpr": _pct(at_model["fpr"]), "precision": _pct(at_model["precision"]),
            "f1": _pct(at_model["f1"]), "tp": at_model["tp"], "fp": at_model["fp"],
            "fn": at_model["fn"], "tn": at_model["tn"]},
        "components": {
            "threshold": comp_threshold, "threshold_source": comp_source,
            "siou_thresholds": cres["thresholds"], "f1": [_pct(v) for v in cres["f1"]],
            "tp": cres["tp"], "fn": cres["fn"], "fp": cres["fp"], **cres["counts"]},
        "score_resolution": counts["relative_resolution"],  # 0: exact (every distinct score)
        "warnings": warnings,
    }
    if ires is not None:
        result["image_auroc"] = _pct(ires[f"auroc_{image_score}"])
        result["image"] = {"score": image_score, "top_k": ires["top_k"],
                           "auroc_max": _pct(ires["auroc_max"]), "auroc_topk": _pct(ires["auroc_topk"]),
                           "images": ires["images"], "anomalous": ires["anomalous"],
                           "normal": ires["normal"], "skipped": ires["skipped"]}
    return result
