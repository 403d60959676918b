"""`flowclas-ros demo`: the main job: the detector on sample frames, an overlay montage."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: detector on sample frames, overlay montage")
    p.add_argument("--model", help="model to use (default: shipped model, else a toy model)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz")
    p.add_argument("--offline", action="store_true", help="no ROS: run the Detector in-process")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.tools.demo import run_demo

    return run_demo(model=a.model, out=Path(a.out), frames=a.frames, rate_hz=a.rate,
                    live=not a.offline)
