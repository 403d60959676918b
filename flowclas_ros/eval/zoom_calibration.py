"""Fit the zoomed band (runtime/zoom_band.py) to a model and a world from the user's labelled val.

Three numbers, each derived from the val frames, none chosen by hand per world:

* ``center``: the median centre row of the val's small obstacles (under `SMALL_PX` pixels), the
  rows where far obstacles appear on this camera at this height and pitch; 0.5 when the val has
  none (said in the report).
* ``scale``: the band's scores are magnified views, smoother than native ones, so their inlier
  tail runs lower; `scale` maps the band pass's inlier `TAIL` quantile onto the frame pass's, over
  the band's inlier pixels.
* ``threshold``: the joined heatmap's inlier score above which the val's inlier pixels are flagged
  as often as the model's own threshold flags them without the band: the stage keeps the model's
  false-alarm rate and spends it where the small obstacles are.

Inlier scores are sampled on a fixed pixel grid (every `SAMPLE_STEP`-th pixel each way) to bound
memory on a long val; obstacle pixels are kept whole (they are few) for the per-size recall the
report prints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from flowclas_ros.runtime.labels import INLIER
from flowclas_ros.runtime.zoom_band import ZoomBand, band_heatmap

SMALL_PX = 1000  # obstacles under this many pixels place the band
TAIL = 0.999  # inlier quantile matched between the band pass and the frame pass
SAMPLE_STEP = 3  # inlier pixels sampled on a grid of this step (each way)
MAX_VAL_FRAMES = 500  # frames read from the val at most (bounds time and memory)


@dataclass
class ZoomFit:
    """The fitted stage, its threshold, and what it did on the val (for the report)."""

    band: ZoomBand
    threshold: float
    old_threshold: float
    frames: int
    small_obstacles: int
    band_rows: tuple[int, int]
    frame_hw: tuple[int, int]
    inlier_fpr: tuple[float, float]  # (without, with the band) on the val, % of inlier pixels
    recall_by_size: dict[str, tuple[float, float]] = field(default_factory=dict)  # (without, with) %
    ms_per_frame: tuple[float, float] = (0.0, 0.0)  # (without, with), this machine

    def report(self) -> str:
        h, w = self.frame_hw
        where = (f"median row of {self.small_obstacles} small obstacles (<{SMALL_PX} px)"
                 if self.small_obstacles else "the val has no small obstacle: the frame's middle")
        lines = [f"zoomed band: center {self.band.center:.3f} ({where}), zoom {self.band.zoom:g}: rows "
                 f"{self.band_rows[0]}-{self.band_rows[1]} of {w}x{h} frames",
                 f"band score scale {self.band.scale:.4f} (inlier q{100 * TAIL:g} of the band pass onto the "
                 f"frame pass's)",
                 f"threshold {self.old_threshold:.4f} -> {self.threshold:.4f}: val inlier FPR "
                 f"{self.inlier_fpr[0]:.3f} % -> {self.inlier_fpr[1]:.3f} % ({self.frames} val frames)",
                 f"ms per frame on this machine: {self.ms_per_frame[0]:.0f} -> {self.ms_per_frame[1]:.0f}"]
        if self.recall_by_size:
            lines.append("val pixel recall at the threshold by obstacle size (without -> with): " + ", ".join(
                f"{k} px {a:.1f} -> {b:.1f} %" for k, (a, b) in self.recall_by_size.items()))
        return "\n".join(lines)


def small_obstacle_rows(label: np.ndarray) -> list[float]:
    """Centre rows of the label's obstacles under `SMALL_PX` pixels (8-connected components)."""
    from flowclas_ros.eval.size_recall import obstacles

    n, _, stats = obstacles(label)
    return [float(stats[k, 1] + stats[k, 3] / 2) for k in range(1, n) if stats[k, 4] < SMALL_PX]


def fit_zoom_band(model: str | os.PathLike, val: Any, zoom: float = 2.0, center: Optional[float] = None,
                  providers: tuple[str, ...] = ("cpu",), max_frames: int = MAX_VAL_FRAMES,
                  layout: str = "generic") -> ZoomFit:
    """Fit the band on ``val`` (a labelled dataset root or samples, as `evaluate` reads them) for
    ``model``. ``center``: None derives it from the val's small obstacles."""
    import time

    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.deploy.open_model import open_detector
    from flowclas_ros.eval.evaluate import eval_items, read_eval_frame
    from flowclas_ros.eval.size_recall import bucket_of, obstacles

    ZoomBand(center=0.5 if center is None else center, zoom=zoom)  # bad settings fail before any work
    det = open_detector(model, providers=providers, zoom="off")
    frames, _ = eval_items(val, layout, max_frames)
    if not frames:
        raise DatasetError(f"{val}: no labelled frames to fit the zoomed band on")
    rows: list[float] = []
    hw = (0, 0)
    for f in frames:  # first pass: where the small obstacles are (frames are read twice, not held)
        rgb, label = read_eval_frame(f)
        hw = rgb.shape[:2]
        rows += [r / label.shape[0] for r in small_obstacle_rows(label)]
    c = float(np.median(rows)) if center is None and rows else (0.5 if center is None else center)
    probe = ZoomBand(center=c, zoom=zoom)

    outside, inside_main, inside_band = [], [], []  # sampled inlier scores
    obstacle_main, obstacle_band, obstacle_bucket = [], [], []  # every obstacle pixel
    t_main = t_band = 0.0
    for f in frames:
        rgb, label = read_eval_frame(f)
        t0 = time.perf_counter()
        main = det.heatmap(rgb, "rgb8")
        t1 = time.perf_counter()
        band = band_heatmap(rgb, probe, det.frame_heatmap)
        t_main, t_band = t_main + t1 - t0, t_band + time.perf_counter() - t1
        top, end = probe.rows(label.shape[0])
        in_band = np.zeros(label.shape, bool)
        in_band[top:end] = True
        grid = np.zeros(label.shape, bool)
        grid[::SAMPLE_STEP, ::SAMPLE_STEP] = True
        inl = (label == INLIER) & grid
        outside.append(main[inl & ~in_band])
        inside_main.append(main[top:end][inl[top:end]])
        inside_band.append(band[inl[top:end]])
        full_band = np.full(label.shape, -np.inf, np.float32)
        full_band[top:end] = band
        n, comp, stats = obstacles(label)
        for k in range(1, n):
            px = comp == k
            obstacle_main.append(main[px])
            obstacle_band.append(full_band[px])
            obstacle_bucket.append(np.full(int(np.count_nonzero(px)), bucket_of(int(stats[k, 4]))))
    in_main, in_band_s = np.concatenate(inside_main), np.concatenate(inside_band)
    scale = float(np.quantile(in_main, TAIL) / max(float(np.quantile(in_band_s, TAIL)), 1e-6))
    fitted = ZoomBand(center=c, zoom=zoom, scale=min(max(scale, 1e-3), 100.0))
    before = np.concatenate([np.concatenate(outside), in_main])
    after = np.concatenate([np.concatenate(outside), np.maximum(in_main, fitted.scale * in_band_s)])
    fpr = float(np.mean(before >= det.threshold))
    # the same inlier FPR with the band; a val without a flagged inlier keeps the model's threshold
    threshold = float(np.quantile(after, 1.0 - fpr)) if fpr > 0 else max(float(det.threshold), float(after.max()))
    recall: dict[str, tuple[float, float]] = {}
    if obstacle_main:
        o_main, o_band = np.concatenate(obstacle_main), np.concatenate(obstacle_band)
        o_join, o_bucket = np.maximum(o_main, fitted.scale * o_band), np.concatenate(obstacle_bucket)
        for k in ("<200", "200-1000", "1000-5000", ">=5000"):
            sel = o_bucket == k
            if sel.any():
                recall[k] = (100 * float(np.mean(o_main[sel] >= det.threshold)),
                             100 * float(np.mean(o_join[sel] >= threshold)))
    n_frames = len(frames)
    return ZoomFit(band=fitted, threshold=threshold, old_threshold=float(det.threshold), frames=n_frames,
                   small_obstacles=len(rows) if center is None else 0, band_rows=probe.rows(hw[0]),
                   frame_hw=hw, inlier_fpr=(100 * fpr, 100 * float(np.mean(after >= threshold))),
                   recall_by_size=recall,
                   ms_per_frame=(1e3 * t_main / n_frames, 1e3 * (t_main + t_band) / n_frames))


def write_zoomed_model(model: str | os.PathLike, out: str | os.PathLike, fit: ZoomFit) -> None:
    """``model`` copied to ``out`` carrying the fitted band and its threshold."""
    from flowclas_ros.deploy.onnx_metadata import set_zoom_band
    from flowclas_ros.runtime.model_info import read_model_info

    rule = read_model_info(model).threshold_rule
    set_zoom_band(model, out, fit.band, fit.threshold,
                  f"{rule}; zoomed band: the same val inlier FPR with the band (threshold before: "
                  f"{fit.old_threshold:g}, {Path(str(model)).name})")
