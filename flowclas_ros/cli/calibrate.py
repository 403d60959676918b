"""`flowclas-ros calibrate`: change post-processing keys of a trained checkpoint and recalibrate."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="change post-processing keys of a trained checkpoint "
                       "(score smoothing, log-det, calibration rule) and recalibrate")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="the new checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="e.g. --set model.score_blur_sigma=0")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.training.calibration import recalibrate

    path = recalibrate(a.checkpoint, a.out, a.set)
    print(f"recalibrated checkpoint: {path}")
    return 0
