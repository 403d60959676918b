"""`flowclas-ros evaluate`: SMIYC pixel + component metrics and a report on a labelled dataset."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
    from flowclas_ros.eval.evaluate import IMAGE_SCORES

    p = sub.add_parser("evaluate", help="SMIYC pixel + component metrics and a report on a "
                       "labelled dataset")
    p.add_argument("--data", required=True, help="dataset root (labels 0 inlier / 1 anomaly / "
                   "255 void)")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--out", help="report directory (plots, montages, per_frame.csv, metrics.json)")
    p.add_argument("--layout", default="generic", help="dataset layout name (default generic)")
    p.add_argument("--max-frames", type=int, help="only the first N frames (sorted by id)")
    p.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    p.add_argument("--min-pred-area", type=int, default=MIN_PRED_AREA,
                   help=f"drop predicted components below this many pixels (ObstacleTrack {MIN_PRED_AREA})")
    p.add_argument("--min-gt-area", type=int, default=MIN_GT_AREA,
                   help=f"ground-truth components below this many pixels become void ({MIN_GT_AREA})")
    p.add_argument("--layout-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="layout reader option, repeatable, e.g. --layout mvtec --layout-opt "
                   "category=bottle --layout-opt split=test")
    p.add_argument("--image-score", choices=IMAGE_SCORES, default="max",
                   help="image-level score behind image_auroc: max of the pixel map, or topk mean")
    p.add_argument("--image-top-k", type=float, default=0.01,
                   help="fraction of pixels averaged by the topk image score (default 0.01)")
    p.add_argument("--regions", choices=("model", "off"), default="model",
                   help="the region-evidence stage after the model: the one the model file "
                   "carries (default) or none")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.layouts import parse_layout_option
    from flowclas_ros.eval.evaluate import evaluate
    from flowclas_ros.eval.report import format_summary, to_json

    result = evaluate(a.data, a.model, out_dir=a.out, layout=a.layout,
                      providers=[p for p in a.providers.split(",") if p],
                      min_pred_area=a.min_pred_area, min_gt_area=a.min_gt_area,
                      max_frames=a.max_frames, progress=not a.quiet,
                      image_score=a.image_score, image_top_k=a.image_top_k,
                      layout_options=dict(parse_layout_option(o) for o in a.layout_opt),
                      regions=a.regions)
    print(to_json(result) if a.json else format_summary(result))
    return 0
