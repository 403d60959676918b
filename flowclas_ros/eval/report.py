"""The evaluator's report directory: metrics.json, per_frame.csv, PR/ROC plots, montages, summary text.

Kept apart from the metric computation so that the two callers of the evaluator (``evaluate`` on
a dataset and ``replay`` on a bag) write the same files, byte for byte, from the same code, and
so that reading the numbers never needs matplotlib. Only the standard library at import time
(the CLI imports the summary and JSON helpers); numpy, OpenCV and matplotlib are imported inside
the functions.

Files written by :func:`write_report`:

* ``pr_curve.png`` / ``roc_curve.png``: the pooled pixel curves;
* ``per_frame.csv``: one row per frame (F1 at the component threshold, AP, pixel and component
  counts, image score, inference ms);
* ``montage_worst.png`` / ``montage_best.png``: up to ``MONTAGE_FRAMES`` frames ranked by
  :func:`worst_first` on their F1 at the model's own threshold, ground truth in green and in white
  what the robot flags: the obstacle mask at the model threshold (not the best-F1 one); obstacles
  of low contrast to their surroundings that the mask missed (`size_recall.low_contrast_misses`)
  are outlined in magenta and counted in the caption;
* ``metrics.json``: the metrics dict plus ``report``, strict JSON (:func:`to_json`).
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from flowclas_ros.runtime.labels import VOID

if TYPE_CHECKING:
    import numpy as np

    from flowclas_ros.eval.pixel_metrics import PixelMetrics

__all__ = ["fmt_number", "format_summary", "to_json", "worst_first", "write_report"]

MONTAGE_FRAMES = 8  # tiles in montage_worst.png / montage_best.png
TILE_WIDTH = 320  # montage tiles are scaled to this width (toy frames are tiny)
GT_COLOR = (0, 255, 0)  # bgr: ground-truth contour (prediction contours are white)
LOW_CONTRAST_MISS_COLOR = (255, 0, 255)  # bgr: a low-contrast obstacle the mask missed


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(result: dict, indent: Optional[int] = None) -> str:
    """Strict JSON (undefined values as null)."""
    return json.dumps(_clean(result), indent=indent, allow_nan=False)


def worst_first(per_frame: list[dict], f1: str = "f1") -> list[dict]:
    """Per-frame rows ranked worst first: by the F1 column ``f1`` (``f1``: at the component
    threshold; ``f1_model``: at the model threshold), ties broken by per-frame AP (frames without
    anomaly pixels have no AP: they rank by F1 alone, 100 when free of false alarms), then by the
    later frame first."""
    return sorted(per_frame, key=lambda r: (r[f1], -1.0 if math.isnan(r["ap"]) else r["ap"],
                                            -r["index"]))


def write_report(out_dir: str | os.PathLike, result: dict, pixel: PixelMetrics,
                 per_frame: list[dict], read_rgb: Callable[[int], np.ndarray],
                 read_cached: Callable[[int], tuple[np.ndarray, np.ndarray]], threshold: float,
                 min_pred_area: int) -> None:
    """Curves, per_frame.csv, montages and metrics.json (``result`` plus ``report``) in
    ``out_dir``. ``read_rgb(i)``: the RGB frame of the i-th row; ``read_cached(i)``: its float32
    heatmap and its label; ``threshold`` / ``min_pred_area``: what the montages draw as the
    prediction (the model's threshold: what the robot flags)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(out, pixel.curves(), result)
    with open(out / "per_frame.csv", "w", newline="") as f:
        cols = ["id", "f1", "f1_model", "ap", "anomaly_pixels", "valid_pixels", "max_score", "image_score",
                "gt_components", "pred_components", "ms"]
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in per_frame:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    ranked = worst_first(per_frame, "f1_model")
    k = min(MONTAGE_FRAMES, max(1, (len(ranked) + 1) // 2))  # worst and best overlap little
    for name, rows in (("montage_worst.png", ranked[:k]),
                       ("montage_best.png", ranked[::-1][:k])):
        _montage(out / name, rows, read_rgb, read_cached, threshold, min_pred_area)
    result["report"] = str(out)
    (out / "metrics.json").write_text(to_json(result, indent=2) + "\n")


def plot_curves(out: Path, c: dict, result: dict) -> None:
    import numpy as np
    from matplotlib.figure import Figure  # lazy; Figure + savefig uses Agg, no global backend

    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.add_subplot()
    if c["recall"].size:
        ax.plot(np.r_[0.0, c["recall"]], np.r_[c["precision"][0], c["precision"]],
                drawstyle="steps-pre", label=f"AUPRC {result['auprc']:.2f}%")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "undefined (no anomaly pixels)", ha="center")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR, pooled pixels ({result['frames']} frames)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pr_curve.png")

    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.add_subplot()
    if c["fpr"].size:
        ax.plot(c["fpr"], c["tpr"], label=f"AUROC {result['auroc']:.2f}%, "
                f"FPR95 {result['fpr95']:.2f}%")
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "undefined (needs anomaly and inlier pixels)", ha="center")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1),
           ylim=(0, 1.02), title="ROC, pooled pixels")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "roc_curve.png")


def _tile(rgb: np.ndarray, heat: np.ndarray, label: np.ndarray, threshold: float,
          min_pred_area: int, caption: str) -> np.ndarray:
    import cv2
    import numpy as np

    from flowclas_ros.eval.size_recall import low_contrast_misses
    from flowclas_ros.runtime.processing import threshold_components
    from flowclas_ros.runtime.visualize import render_overlay

    # the prediction exactly as the component metrics see it: void removed before labelling
    mask, _ = threshold_components(np.where(label == VOID, -np.inf, heat).astype(np.float32),
                                   threshold, min_pred_area)
    # render at tile size, so contours keep their width on large frames
    scale = TILE_WIDTH / rgb.shape[1]
    size = (TILE_WIDTH, max(1, round(rgb.shape[0] * scale)))
    smooth = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
    img = render_overlay(cv2.resize(rgb, size, interpolation=smooth),
                         cv2.resize(heat, size, interpolation=smooth),
                         cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST), threshold)
    gt = cv2.resize((label == 1).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(gt, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, GT_COLOR, 2)
    missed = low_contrast_misses(rgb, heat, label, threshold)
    if missed.any():
        small = cv2.resize(missed, size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, LOW_CONTRAST_MISS_COLOR, 2)
        caption += f"  LC miss x{cv2.connectedComponents(missed, connectivity=8)[0] - 1}"
    bar = np.zeros((22, img.shape[1], 3), np.uint8)
    cv2.putText(bar, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.vstack([bar, img])


def _montage(path: Path, rows: list[dict], read_rgb: Callable[[int], np.ndarray],
             read_cached: Callable[[int], tuple[np.ndarray, np.ndarray]], threshold: float,
             min_pred_area: int) -> None:
    import cv2
    import numpy as np

    from flowclas_ros.runtime.visualize import montage

    tiles = []
    for r in rows:
        i = r["index"]
        rgb = read_rgb(i)
        heat, label = read_cached(i)
        ap = "" if math.isnan(r["ap"]) else f" AP {r['ap']:.1f}"
        tiles.append(_tile(rgb, heat, label, threshold, min_pred_area,
                           f"{r['id']}  F1 {r['f1_model']:.1f}{ap}"))
    grid = montage(tiles, columns=max(2, min(4, len(tiles))))  # >= 2: room for the legend
    legend = np.zeros((22, grid.shape[1], 3), np.uint8)
    cv2.putText(legend, f"green: ground truth   white: flagged at the model threshold "
                f"(score >= {threshold:.4g}, area >= {min_pred_area})   magenta: low-contrast (LC) miss",
                (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (200, 200, 200), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.vstack([legend, grid]))


# ---------------------------------------------------------------- summary text


def fmt_number(v: Any, fmt: str = ".2f") -> str:
    """A number for a summary line; n/a for None and non-finite values."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def scene_line(r: dict) -> str:
    """The domain-shift alarm of a result (runtime/scene_alarm.py) as one summary line, or ''."""
    sc = r.get("scene")
    if not sc or sc["flagged_share_mean"] is None:
        return ""
    return (f"scene:     {100 * sc['flagged_share_mean']:.2f} % of pixels flagged on average; the "
            f"node's alarm would be {sc['level']} ({sc['message']})")


def format_summary(r: dict) -> str:
    m, c = r["at_model_threshold"], r["components"]
    lines = [
        f"model {r['model']} (version {r['model_version']}) on {r['data']}",
        f"frames {r['frames']} ({r['anomaly_frames']} with anomaly pixels), "
        f"{fmt_number(r['ms_per_frame'])} ms/frame (median)",
        f"pixel:     AUPRC {fmt_number(r['auprc'])}  FPR95 {fmt_number(r['fpr95'])}  AUROC {fmt_number(r['auroc'])}  "
        f"best F1 {fmt_number(r['best_f1'])} @ {fmt_number(r['best_f1_threshold'], '.4g')}",
        f"component: sIoU {fmt_number(r['siou'])}  PPV {fmt_number(r['ppv'])}  mean F1 {fmt_number(r['mean_f1'])}  "
        f"({c['gt_components']} GT / {c['pred_components']} predicted components @ "
        f"{fmt_number(c['threshold'], '.4g')})",
        f"model threshold {fmt_number(m['threshold'], '.4g')}: TPR {fmt_number(m['tpr'])}  FPR {fmt_number(m['fpr'])}  "
        f"precision {fmt_number(m['precision'])}  F1 {fmt_number(m['f1'])}",
    ]
    if "image" in r:
        im = r["image"]
        lines.append(f"image:     AUROC {fmt_number(r['image_auroc'])} ({im['score']}); max {fmt_number(im['auroc_max'])}  "
                     f"top-{100 * im['top_k']:g}% mean {fmt_number(im['auroc_topk'])}  "
                     f"({im['anomalous']} anomalous / {im['normal']} normal images)")
    if "recall_by_size" in r:
        lines.append("recall at the model threshold by obstacle size (px): " + "  ".join(
            f"{name} {fmt_number(b['pixel_recall'], '.1f')}% ({b['objects']})"
            for name, b in r["recall_by_size"].items()))
    if "recall_by_contrast" in r:
        lines.append("recall at the model threshold by obstacle contrast (Delta E to its ring): " + "  ".join(
            f"{name} {fmt_number(b['pixel_recall'], '.1f')}% ({b['objects']})"
            for name, b in r["recall_by_contrast"].items()))
    if scene_line(r):
        lines.append(scene_line(r))
    stage = r.get("depth_stage", {})
    if set(stage) - {"off"}:
        lines.append("depth region stage (frames): " + "  ".join(f"{k} {v}" for k, v in stage.items()))
    lines += [f"warning: {w}" for w in r["warnings"]]
    if r.get("report"):
        lines.append(f"report: {r['report']}")
    return "\n".join(lines)
