"""`flowclas-ros detect`: run the detector on image files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flowclas_ros.cli.arguments import finite_float, int_at_least
from flowclas_ros.runtime.node_interface import default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="run the detector on image files")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    p.add_argument("--threshold", type=finite_float, help="obstacle threshold (default: the model's)")
    p.add_argument("--min-area", type=int_at_least(0), default=default("min_obstacle_area"),
                   help="drop obstacles smaller than this many pixels (default: the node's, %(default)s)")
    p.add_argument("--out", help="directory for overlay PNGs")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    """One JSON line per image; an image that cannot be read (damaged, or larger than
    runtime.images.MAX_DECODED_PIXELS, 7680x4320, which its header says before decoding) is one
    error line on stderr and the others are still processed (exit status 2 when any failed).
    Memory: about 17 bytes a pixel at the size limit (~0.6 GB at 8K, with or without --out)."""
    import cv2

    from flowclas_ros.data.files import DatasetError, read_image_rgb
    from flowclas_ros.deploy.open_model import open_detector
    from flowclas_ros.runtime.images import ImageError
    from flowclas_ros.runtime.visualize import render_overlay

    out = Path(a.out) if a.out else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise DatasetError(f"--out {out} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    det = open_detector(a.model, providers=a.providers.split(","), threshold=a.threshold,
                        min_area=a.min_area)
    failed = 0
    for path in a.images:
        try:
            rgb = read_image_rgb(path)
        except (DatasetError, ImageError) as exc:
            print(f"flowclas-ros: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        d = det.detect(rgb, "rgb8")
        rec = {"image": str(path), "ms": round(d.timings_ms["total"], 2),
               "obstacles": [o.__dict__ for o in d.obstacles]}
        print(json.dumps(rec), flush=True)
        if out:
            cv2.imwrite(str(out / (Path(path).stem + "_overlay.png")),
                        render_overlay(rgb, d.heatmap, d.mask, det.threshold))
    return 2 if failed else 0
