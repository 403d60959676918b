"""The domain-shift alarm: is the robot in a scene unlike the training data?

A calibrated model flags a known share of a familiar scene's pixels: the calibration's inlier
rate (0.1 % for the shipped models) plus the obstacles actually in view, usually a few percent.
In a scene unlike its training data the flow finds everything unlikely and the mask floods
(a model tuned in one world flagged 73 % of another world's pixels): every "obstacle" is then
noise, and the honest answer is to say so. The node, replay and the evaluator share this rule:
the mean share of pixels at or above the threshold over the last frames, against two levels.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from flowclas_ros.runtime.node_interface import SCENE_WINDOW_FRAMES, default

OK, WARN, ERROR = "ok", "warn", "error"
# The levels and the window are the node's (runtime/node_interface.py), so evaluate and replay
# report the level the node's alarm would reach with its default parameters.
WARN_SHARE: float = default("scene_warn_share")  # mean flagged share above which the scene is suspect
ERROR_SHARE: float = default("scene_error_share")  # ... above which the mask is mostly noise
WINDOW_FRAMES = SCENE_WINDOW_FRAMES  # about 1-3 s of camera frames
RETRAIN_ADVICE = "scene unlike the training data: retrain on this robot's logs (flowclas-ros train --bag)"


def flagged_share(heatmap: np.ndarray, threshold: float) -> float:
    """Share of the frame's pixels at or above the threshold (before the minimum-area filter, so
    a flood of small specks counts too)."""
    return float(np.count_nonzero(heatmap >= threshold)) / max(heatmap.size, 1)


def alarm_level(mean_share: float, warn: float = WARN_SHARE, error: float = ERROR_SHARE) -> str:
    return ERROR if mean_share >= error else WARN if mean_share >= warn else OK


def describe(mean_share: float, frames: int, level: str) -> str:
    share = f"{100 * mean_share:.1f} % of pixels flagged on average over {frames} frames"
    if level == ERROR:
        return f"{RETRAIN_ADVICE} ({share})"
    if level == WARN:
        return f"many pixels flagged, scene possibly unlike the training data ({share})"
    return share


class FlaggedShareWindow:
    """The mean flagged share of the last `size` frames."""

    def __init__(self, size: int = WINDOW_FRAMES) -> None:
        self.shares: deque[float] = deque(maxlen=size)

    def add(self, share: float) -> None:
        self.shares.append(share)

    @property
    def mean(self) -> float:
        return float(np.mean(self.shares)) if self.shares else 0.0

    def level(self, warn: float = WARN_SHARE, error: float = ERROR_SHARE) -> str:
        return alarm_level(self.mean, warn, error) if self.shares else OK


def scene_summary(shares: list[float]) -> dict[str, float | str | None]:
    """The alarm over a whole dataset or bag, as `evaluate` and `replay` report it: the mean
    flagged share, the level it would put the node's diagnostics in, the worst window."""
    if not shares:
        return {"flagged_share_mean": None, "level": OK, "worst_window_mean": None}
    arr = np.asarray(shares, np.float64)
    n = min(WINDOW_FRAMES, arr.size)
    windows = np.convolve(arr, np.ones(n) / n, mode="valid")
    mean, worst = float(arr.mean()), float(windows.max())
    return {"flagged_share_mean": mean, "level": alarm_level(worst), "worst_window_mean": worst,
            "message": describe(worst, n, alarm_level(worst))}
