"""Micro-benchmark of the region-evidence stage alone (runtime/regions.py), per frame, in ms.

Runs each frame of a dataset through the model once, then times `Detector.refine` (the stage
plus its copy of the score map) on the frame's own scores, repeated; prints the median and p95
per frame, the share of frames where the stage changed any score, and the model's own inference
time measured in the same run for scale. The stage works on the model's input grid, so its cost
does not depend on the camera's resolution beyond the resize the Detector does anyway.

    python scripts/bench_regions.py --model fast --data data/sim/val --frames 100
    python scripts/bench_regions.py --model fast --data data/sim/val --set edge_score=0.7
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.regions import RegionEvidence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fast")
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage settings (default: the model's own stage, else the defaults)")
    a = ap.parse_args()
    det = Detector(a.model)
    if a.set or det.regions is None:
        det.regions = RegionEvidence.from_dict(
            {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in a.set)})
    stage, infer, fired = [], [], 0
    for sample in load_layout("generic", a.data)[:a.frames]:
        rgb = read_image_rgb(sample.image_path)
        x, geom, placed = det.prepare_with_image(rgb)
        t0 = time.perf_counter()
        score = det.backend(x[None])[0]
        infer.append((time.perf_counter() - t0) * 1e3)
        fired += not np.array_equal(det.refine(score, geom, placed), score)
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            det.refine(score, geom, placed)
            stage.append((time.perf_counter() - t0) * 1e3)
    n = len(infer)
    print(f"region stage {det.regions.to_json()}")
    print(f"{n} frames of {a.data} ({rgb.shape[1]}x{rgb.shape[0]}), model grid {det.info.input_size}: "
          f"stage median {np.median(stage):.2f} ms, p95 {np.percentile(stage, 95):.2f} ms; "
          f"changed scores in {fired}/{n} frames; model inference median {np.median(infer):.2f} ms")


if __name__ == "__main__":
    main()
