"""The pixel label coding every part of the package speaks: 0 inlier, 1 anomaly, 255 void.

Ground truth of every dataset layout is decoded into it (:mod:`flowclas_ros.data.labels`), the
losses mark feature cells with it, the evaluator and the replay tool score against it, and a
ground-truth topic in a bag carries it as mono8. Void pixels (unlabelled, letterbox padding, mixed
feature cells) are left out of every loss and metric.
"""
from __future__ import annotations

INLIER = 0
ANOMALY = 1
VOID = 255
LABEL_VALUES: tuple[int, ...] = (INLIER, ANOMALY, VOID)
