#!/usr/bin/env python3
"""How a model's false alarms and per-size recall move with its operating point, measured honestly
on a labelled val: the val is split in two halves (even and odd frames), the threshold is set on
one half at each inlier FPR, and the other half says what it flags; both ways, averaged.

This is how the new-world recipes' operating point was chosen (training/recipes.py,
docs/results.md "The operating point"): a threshold set at P % on a world's val flags about P % of
new frames' inlier pixels, and the spread between halves says how much margin a 0.5 % false-alarm
budget needs.

    scripts/operating_point.py runs/lwo/gen-1/new-world-accurate+zoom_200/model.onnx data/worlds/gen-1/val
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from flowclas_ros.deploy.open_model import open_detector
from flowclas_ros.eval.evaluate import eval_items, read_eval_frame
from flowclas_ros.eval.size_recall import SIZE_BUCKETS, bucket_of, obstacles
from flowclas_ros.eval.zoom_calibration import SAMPLE_STEP  # the band's fit samples inliers alike
from flowclas_ros.runtime.labels import INLIER


def frame_scores(model: str, val: str, max_frames: int) -> tuple[list[np.ndarray], list[list[tuple[str, np.ndarray]]]]:
    """Per val frame: sampled inlier scores, and (size bucket, scores) of each obstacle, from the
    model's own heatmap (with its zoomed band, when the file carries one)."""
    det = open_detector(model, providers=("cpu",))
    frames, _ = eval_items(val, "generic", max_frames)
    if len(frames) < 2:
        raise SystemExit(f"{val}: needs at least 2 labelled frames, has {len(frames)}")
    inliers, obstacle_scores = [], []
    for f in frames:
        rgb, label = read_eval_frame(f)
        heat = det.heatmap(rgb, "rgb8")
        grid = np.zeros(label.shape, bool)
        grid[::SAMPLE_STEP, ::SAMPLE_STEP] = True
        inliers.append(heat[(label == INLIER) & grid])
        n, comp, stats = obstacles(label)
        obstacle_scores.append([(bucket_of(int(stats[k, 4])), heat[comp == k]) for k in range(1, n)])
    return inliers, obstacle_scores


def held_out_half(inliers: list[np.ndarray], obstacle_scores: list[list[tuple[str, np.ndarray]]],
                  rate: float, fit: int) -> tuple[float, float, dict[str, float]]:
    """(inlier FPR %, obstacle pixel recall %, recall % per size bucket) on the half of the frames
    not used to set the threshold (frames with index % 2 == fit set it)."""
    other = [i for i in range(len(inliers)) if i % 2 != fit]
    threshold = np.quantile(np.concatenate(inliers[fit::2]), 1 - rate / 100)
    fpr = 100 * float(np.mean(np.concatenate([inliers[i] for i in other]) >= threshold))
    pixels = [(b, s) for i in other for b, s in obstacle_scores[i]]
    tpr = 100 * float(np.mean(np.concatenate([s for _, s in pixels]) >= threshold)) if pixels else float("nan")
    recall = {}
    for name, _, _ in SIZE_BUCKETS:
        inside = [s for b, s in pixels if b == name]
        if inside:
            recall[name] = 100 * float(np.mean(np.concatenate(inside) >= threshold))
    return fpr, tpr, recall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="an exported ONNX model")
    p.add_argument("val", help="labelled val frames (images/ + labels/)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5],
                   help="inlier FPRs in %% to set the threshold at")
    p.add_argument("--max-frames", type=int, default=500)
    a = p.parse_args()
    if not all(0 < r < 100 for r in a.rates):
        raise SystemExit(f"--rates {a.rates}: each must be in (0, 100) %")
    inliers, obstacle_scores = frame_scores(a.model, a.val, a.max_frames)
    print(f"{a.model} on {a.val}: {len(inliers)} frames, threshold set on one half, measured on the other")
    for rate in a.rates:
        halves = [held_out_half(inliers, obstacle_scores, rate, fit) for fit in (0, 1)]
        recall = {name: float(np.mean([h[2][name] for h in halves if name in h[2]]))
                  for name, _, _ in SIZE_BUCKETS if any(name in h[2] for h in halves)}
        print(f"set at {rate:g} %: other half's inlier FPR mean {np.mean([h[0] for h in halves]):.3f} % "
              f"max {max(h[0] for h in halves):.3f} %, obstacle pixel recall {np.mean([h[1] for h in halves]):.1f} %, "
              "by size " + ", ".join(f"{k} px {v:.1f} %" for k, v in recall.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
