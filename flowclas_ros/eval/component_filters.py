"""The component size filters of the evaluation, in one place: evaluate, replay, the component
metrics and the `--min-pred-area` / `--min-gt-area` flags all default to these.

The values are SMIYC ObstacleTrack's: a predicted component smaller than ``MIN_PRED_AREA`` pixels
is dropped before the component metrics (specks are not obstacle claims), and a ground-truth
component smaller than ``MIN_GT_AREA`` pixels becomes void (too small to score fairly). Plain
constants with no import, so the command-line parser can read them without numpy.
"""
from __future__ import annotations

MIN_PRED_AREA = 50
MIN_GT_AREA = 10
