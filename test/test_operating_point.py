"""scripts/operating_point.py: the threshold is set on one half of the val and measured on the
other, so the printed false-alarm rate is that of frames the threshold never saw."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "operating_point.py"


def _script():
    spec = importlib.util.spec_from_file_location("operating_point", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_threshold_set_on_one_half_is_measured_on_the_other():
    op = _script()
    # even frames (the fitting half for fit=0) score their inliers 0..1; odd frames run hotter
    inliers = [np.linspace(0, 1, 10001) + (0.0 if i % 2 == 0 else 0.001) for i in range(4)]
    small = [("<200", np.array([0.9995, 0.5]))]  # one pixel above the 0.1 % threshold, one below
    obstacle_scores = [small, small, small, small]
    fpr, tpr, recall = op.held_out_half(inliers, obstacle_scores, rate=0.1, fit=0)
    assert 0.1 < fpr < 0.25  # the hotter half flags more than the 0.1 % the threshold was set at
    assert tpr == 50.0 and recall == {"<200": 50.0}
    fpr_back, _, _ = op.held_out_half(inliers, obstacle_scores, rate=0.1, fit=1)
    assert fpr_back < 0.1  # the other way round, the cooler half flags less
