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

import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.report import write_report
from flowclas_ros.runtime.labels import VOID

if TYPE_CHECKING:
    import numpy as np

# Only the standard library at import time: `flowclas-ros` imports this module to register the
# verb, so numpy, OpenCV, onnxruntime and matplotlib are imported inside the functions.

__all__ = ["COMPONENT_THRESHOLDS", "IMAGE_SCORES", "Evaluation", "evaluate"]

IMAGE_SCORES = ("max", "topk")  # image-level score rules (image_metrics.image_score)
COMPONENT_THRESHOLDS = ("best_f1", "model")  # where the component metrics are taken

log = logging.getLogger(__name__)


@dataclass
class _EvalItem:
    id: str
    sample: Any  # Sample, or (id, rgb, label)


def eval_items(data: Any, layout: str, max_frames: Optional[int],
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


def read_eval_frame(frame: _EvalItem, with_label: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
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


def read_eval_depth(frame: _EvalItem, shape: tuple[int, int], intrinsics: Any) -> Optional[np.ndarray]:
    """The frame's aligned depth in metres (NaN = no reading) for the depth region stage, or None:
    a frame without ``depth/{id}.png``, or a dataset without intrinsics (``camera_info.yaml``).
    Evaluate and the fleet's dataset shards read depth through this."""
    from flowclas_ros.data.depth_files import read_depth_m
    from flowclas_ros.data.labels import Sample

    s = frame.sample
    if intrinsics is not None and isinstance(s, Sample) and s.depth_path is not None:
        return read_depth_m(s.depth_path, shape)
    return None


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the model extra; the evaluator runs without it
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="frame", file=sys.stderr, leave=False)


def evaluate(data: Any, model_path: Optional[str | os.PathLike] = None,
             out_dir: Optional[str | os.PathLike] = None, layout: str = "generic",
             providers: Sequence[str] = ("cpu",), min_pred_area: int = MIN_PRED_AREA,
             min_gt_area: int = MIN_GT_AREA, max_frames: Optional[int] = None,
             progress: bool = True, max_bins: int = 1 << 20, image_score: str = "max",
             image_top_k: float = 0.01, layout_options: Optional[dict] = None,
             component_threshold: str = "best_f1", regions: str = "model",
             depth_regions: str = "model") -> dict:
    """Evaluate a model on a labelled dataset; returns the metrics dict (see module docstring).

    ``data``: a dataset root read with ``load_layout(layout, data)``, or a sequence of `Sample`
    or ``(id, rgb uint8 HxWx3, label uint8 HxW)`` tuples. ``model_path``: ONNX file or checkpoint
    (None: the shipped default). ``out_dir``: report directory (None: metrics only).
    ``min_pred_area`` / ``min_gt_area``: component size filters (eval/component_filters.py).
    ``image_score``: "max" or "topk" (mean of the top ``image_top_k`` fraction of pixels), the
    rule behind ``image_auroc``. ``layout_options``: keyword options of the layout reader, e.g.
    ``{"category": "bottle", "split": "test"}`` for ``mvtec``. ``component_threshold``: "best_f1"
    (SMIYC) or "model" (as a pooled fleet run, :mod:`flowclas_ros.eval.fleet`). ``regions``: the
    region-evidence stage, "model" (the one the model file carries) or "off" (runtime/regions.py).
    ``depth_regions``: the depth region stage (runtime/depth_regions.py), the same choices; it runs
    on the frames that have aligned depth (``depth/{id}.png`` and the dataset's
    ``camera_info.yaml``, data/depth_files.py), and ``depth_stage`` in the result counts what it
    did per frame ("no_depth": a frame without depth, the stage skipped).

    Warnings (in ``warnings`` and logged), naming the files: entries of the dataset's
    ``images/`` directory that are not image files (skipped), and labels that look like 0/255
    masks among 0/1/255 ones (see :meth:`PooledStats.label_warnings`).
    """
    from flowclas_ros.data.depth_files import read_camera_info
    from flowclas_ros.deploy.open_model import open_detector

    frames, desc = eval_items(data, layout, max_frames, layout_options)
    det = open_detector(model_path, providers=providers, regions=regions, depth_regions=depth_regions)
    intrinsics = read_camera_info(data) if isinstance(data, (str, os.PathLike)) else None
    depth_stage: Counter[str] = Counter()
    with Evaluation(det, min_pred_area, min_gt_area, max_bins, image_score, image_top_k,
                    component_threshold) as ev:
        for fr in _progress(frames, len(frames), "evaluate", progress):
            rgb, label = read_eval_frame(fr)
            depth = read_eval_depth(fr, rgb.shape[:2], intrinsics)
            t0 = time.perf_counter()
            heat, stage = det.with_depth(det.heatmap(rgb, "rgb8"), depth, intrinsics)
            ev.add(fr.id, heat, label, (time.perf_counter() - t0) * 1e3, rgb)
            depth_stage[stage] += 1
        result = ev.finish(desc, layout, progress, describe_ids=label_names(frames))
        result["depth_stage"] = dict(sorted(depth_stage.items()))
        result["warnings"] = dataset_warnings(data) + result["warnings"]
        for w in result["warnings"]:
            log.warning("%s", w)
        if out_dir is not None:
            ev.write_report(out_dir, result, lambda i: read_eval_frame(frames[i], with_label=False)[0])
        return result


def label_names(frames: Sequence[_EvalItem]) -> Callable[[list[str]], list[str]]:
    """Frame ids -> the names warnings give them: the label file (``labels/x.png``) when the
    frame has one, else the id."""
    from flowclas_ros.data.labels import Sample

    by_id = {f.id: f.sample for f in frames}

    def describe(ids: list[str]) -> list[str]:
        out = []
        for i in ids:
            s = by_id.get(i)
            path = s.label_path if isinstance(s, Sample) else None
            out.append(f"{path.parent.name}/{path.name}" if path is not None else i)
        return out

    return describe


def dataset_warnings(data: Any) -> list[str]:
    """Entries of ``<data>/images`` that are not image files (skipped by every layout reader):
    a ``notes.txt``, a directory named ``x.png``: named, so a frame that was meant to be scored
    is not silently missing."""
    from flowclas_ros.data.generic import ignored_image_entries

    if not isinstance(data, (str, os.PathLike)):
        return []
    ignored = ignored_image_entries(Path(data) / "images")
    if not ignored:
        return []
    shown = ", ".join(ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
    return [f"{len(ignored)} entries of {Path(data) / 'images'} are not image files and were "
            f"skipped: {shown}"]


class Evaluation:
    """The evaluator's streaming core: metrics from (heatmap, label) pairs fed one at a time.

    `evaluate` feeds it a labelled dataset through `Detector.heatmap`; `flowclas_ros.eval.replay`
    feeds it the heatmaps the node's frame pipeline made on a bag, so both report the same
    metrics, per-frame scores and report files. `add` is pass 1 (the pooled statistics of
    :class:`~flowclas_ros.eval.pooled_stats.PooledStats` + heatmap/label cache, see the module
    docstring); `finish` is pass 2 and returns the metrics dict, leaving the per-frame scores in
    `per_frame`; `write_report` writes the report directory. A context manager: the cache is
    deleted on exit. ``component_threshold``: "best_f1" (the pooled pixel best-F1 threshold, the
    SMIYC convention) or "model" (the model's own threshold, as a pooled fleet run takes them).
    """

    def __init__(self, detector: Any, min_pred_area: int = MIN_PRED_AREA,
                 min_gt_area: int = MIN_GT_AREA,
                 max_bins: int = 1 << 20, image_score: str = "max", image_top_k: float = 0.01,
                 component_threshold: str = "best_f1") -> None:
        from flowclas_ros.eval.pooled_stats import PooledStats

        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {image_score!r}")
        if component_threshold not in COMPONENT_THRESHOLDS:
            raise ValueError(f"component_threshold must be one of {COMPONENT_THRESHOLDS}, got "
                             f"{component_threshold!r}")
        self.detector = detector  # a runtime Detector: its threshold, model and providers
        self.min_pred_area, self.min_gt_area = int(min_pred_area), int(min_gt_area)
        self.stats = PooledStats(detector.threshold, min_pred_area, min_gt_area, max_bins,
                                 image_top_k)
        self.image_score = image_score
        self.component_threshold = component_threshold
        self.per_frame: list[dict] = []  # set by finish()
        self.threshold: Optional[float] = None  # the component threshold, set by finish()
        self.cache = Path(tempfile.mkdtemp(prefix="flowclas_eval_"))

    @property
    def pixel(self) -> Any:
        return self.stats.pixel

    @property
    def ids(self) -> list[str]:
        return self.stats.ids

    def __len__(self) -> int:
        return len(self.stats)

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

        i = len(self.stats)
        self.stats.add(frame_id, heat, label, ms, rgb)
        h16 = heat.astype(np.float16)  # float32 only if a finite score overflows float16
        overflow = np.count_nonzero(np.isfinite(h16)) != np.count_nonzero(np.isfinite(heat))
        np.save(self.cache / f"{i:07d}_s.npy", heat if overflow else h16)
        np.save(self.cache / f"{i:07d}_l.npy", label)

    def cached(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th frame's cached heatmap (float32 again) and label."""
        import numpy as np

        return (np.load(self.cache / f"{i:07d}_s.npy").astype(np.float32),
                np.load(self.cache / f"{i:07d}_l.npy"))

    def finish(self, desc: str, layout: str, progress: bool = False,
               describe_ids: Optional[Callable[[list[str]], list[str]]] = None) -> dict:
        """Pass 2 (component metrics, per-frame scores) and the metrics dict.
        ``describe_ids``: names of frames in warnings (e.g. their label files)."""
        import numpy as np

        from flowclas_ros.eval.component_metrics import ComponentMetrics
        from flowclas_ros.eval.pixel_metrics import average_precision, counts_at_threshold
        from flowclas_ros.eval.pooled_stats import frame_f1, model_meta, pct

        if not self.ids:
            raise ValueError("no frames to evaluate")
        det = self.detector
        self.stats.check_coding(desc)
        pix = self.pixel.result()

        comp_threshold, comp_source = pix["best_f1_threshold"], "pixel_best_f1"
        if self.component_threshold == "model" or not math.isfinite(comp_threshold):
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
                "f1": frame_f1(c), "f1_model": frame_f1(cm),
                "ap": pct(average_precision(heat, label)) if n_anom else float("nan"),
                "anomaly_pixels": n_anom, "valid_pixels": int(np.count_nonzero(valid)),
                "max_score": float(heat[valid].max()) if valid.any() else float("nan"),
                "gt_components": int(fc.siou.size), "pred_components": int(fc.ppv.size),
                "image_score": self.stats.image_score(i, self.image_score),
                "ms": self.stats.times_ms[i],
            })
        self.per_frame, self.threshold = per_frame, comp_threshold
        result = self.stats.result(model_meta(det), desc, layout, self.image_score,
                                   components=(comp.result(), comp_threshold, comp_source))
        result["warnings"] += self.stats.label_warnings(describe_ids)
        return result

    def write_report(self, out_dir: str | os.PathLike, result: dict,
                     read_rgb: Callable[[int], np.ndarray]) -> None:
        """Curves, per_frame.csv, montages and metrics.json (``result`` plus ``report``) in
        ``out_dir``, after `finish`; ``read_rgb(i)`` is the RGB frame of the i-th `add`."""
        if self.threshold is None:
            raise RuntimeError("write_report needs finish() first")
        write_report(out_dir, result, self.pixel, self.per_frame, read_rgb, self.cached,
                     self.detector.threshold, self.min_pred_area)
