"""`flowclas-ros detect`: run the detector on image files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="run the detector on image files")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    p.add_argument("--threshold", type=float)
    p.add_argument("--min-area", type=int, default=0)
    p.add_argument("--out", help="directory for overlay PNGs")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    import cv2

    from flowclas_ros.data.files import read_image_rgb
    from flowclas_ros.deploy.torch_backend import open_detector
    from flowclas_ros.runtime.visualize import render_overlay

    det = open_detector(a.model, providers=a.providers.split(","), threshold=a.threshold,
                   min_area=a.min_area)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for path in a.images:
        rgb = read_image_rgb(path)
        d = det.detect(rgb, "rgb8")
        rec = {"image": str(path), "ms": round(d.timings_ms["total"], 2),
               "obstacles": [o.__dict__ for o in d.obstacles]}
        print(json.dumps(rec))
        if out:
            cv2.imwrite(str(out / (Path(path).stem + "_overlay.png")),
                        render_overlay(rgb, d.heatmap, d.mask, det.threshold))
    return 0
