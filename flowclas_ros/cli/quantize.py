"""`flowclas-ros quantize`: an int8 copy of an exported model, threshold carried over, timed against fp32."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="int8 copy of an exported model (the flow's convolutions; "
                       "--backbone: the backbone's too, for models trained on int8 features), "
                       "threshold carried over; times fp32 vs int8 on this machine")
    p.add_argument("model", help="the fp32 ONNX file from `flowclas-ros export`")
    p.add_argument("--data", help="calibration frames (a dataset root; held-out labelled frames "
                   "with obstacles are best). Default for a model trained on int8 features: the "
                   "frames its training calibrated the backbone on")
    p.add_argument("--out", required=True, help="the int8 ONNX file")
    p.add_argument("--frames", type=int, help="calibration frames (default 16; with --backbone "
                   "on a model trained on int8 features: as many as its training used)")
    p.add_argument("--backbone", action="store_true", help="quantise the backbone too (for "
                   "models trained with model.backbone.int8_features: true)")
    p.add_argument("--force", action="store_true", help="--backbone on a model whose flow was "
                   "trained on fp32 features (loses accuracy)")
    p.add_argument("--layout", default="generic", help="dataset layout name (default generic; "
                   "rosbag2 for the robot's own logs)")
    p.add_argument("--layout-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="layout reader option, repeatable, e.g. --layout rosbag2 --layout-opt "
                   "topic=/camera/image_raw")
    p.add_argument("--no-timing", action="store_true", help="skip the fp32 vs int8 timing")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.layouts import parse_layout_option
    from flowclas_ros.deploy.quantize import quantize_flow

    report = quantize_flow(a.model, a.data, a.out, frames=a.frames, layout=a.layout,
                           time_it=not a.no_timing,
                           layout_options=dict(parse_layout_option(o) for o in a.layout_opt),
                           backbone=a.backbone, force=a.force)
    if a.json:
        print(json.dumps(asdict(report)))
    else:
        print(report.summary())
    return 0
