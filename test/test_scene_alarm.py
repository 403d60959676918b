"""The domain-shift alarm's rule (runtime/scene_alarm.py), shared by the node, replay and evaluate."""
from __future__ import annotations

import numpy as np
import pytest

from flowclas_ros.runtime.scene_alarm import (
    ERROR,
    OK,
    WARN,
    WINDOW_FRAMES,
    FlaggedShareWindow,
    alarm_level,
    flagged_share,
    scene_summary,
)


def test_levels_and_share():
    heat = np.zeros((10, 10), np.float32)
    heat[:3] = 2.0
    assert flagged_share(heat, 1.0) == 0.3 and flagged_share(heat, 2.0) == 0.3
    assert flagged_share(heat, 2.5) == 0.0
    assert [alarm_level(s) for s in (0.0, 0.049, 0.05, 0.19, 0.2, 0.9)] == [OK, OK, WARN, WARN, ERROR, ERROR]
    assert alarm_level(0.1, warn=0.2, error=0.5) == OK


def test_window_forgets_old_frames():
    w = FlaggedShareWindow(size=3)
    assert w.level() == OK and w.mean == 0.0
    for s in (0.9, 0.9, 0.9):
        w.add(s)
    assert w.level() == ERROR
    for s in (0.0, 0.0, 0.0):
        w.add(s)
    assert w.level() == OK and w.mean == 0.0


def test_scene_summary_reports_the_worst_window():
    shares = [0.01] * 100 + [0.5] * WINDOW_FRAMES + [0.01] * 100
    s = scene_summary(shares)
    assert s["level"] == ERROR and s["worst_window_mean"] == pytest.approx(0.5)
    assert s["flagged_share_mean"] < 0.1
    assert "retrain" in s["message"]
    assert scene_summary([])["level"] == OK


def test_evaluate_and_replay_report_the_scene(trained, toy_world, tmp_path):
    from flowclas_ros.eval.evaluate import evaluate
    from flowclas_ros.eval.report import format_summary

    r = evaluate(toy_world / "test", trained["onnx"], progress=False)
    assert r["scene"]["level"] == OK and 0 < r["scene"]["flagged_share_mean"] < 0.05
    assert "node's alarm would be ok" in format_summary(r)
