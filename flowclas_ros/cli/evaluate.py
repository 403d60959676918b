"""`flowclas-ros evaluate`: SMIYC pixel + component metrics and a report on a labelled dataset.

Several datasets (repeated ``--data``, a directory of datasets, a glob, a list file) or
``--workers`` / ``--dask``: a fleet run (:mod:`flowclas_ros.eval.fleet`), each dataset cut into
shards of ``--shard-frames`` frames, one pooled answer and a per-dataset table in ``--out``.
"""
from __future__ import annotations

import argparse

from flowclas_ros.cli.arguments import add_pool_arguments, int_at_least, names_many


def register(sub: argparse._SubParsersAction) -> None:
    from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
    from flowclas_ros.eval.evaluate import COMPONENT_THRESHOLDS, IMAGE_SCORES

    p = sub.add_parser("evaluate", help="SMIYC pixel + component metrics and a report on a "
                       "labelled dataset")
    p.add_argument("--data", required=True, action="append", help="dataset root (labels 0 "
                   "inlier / 1 anomaly / 255 void); repeat it, or name a directory of datasets, a "
                   "quoted glob or a list file (@sets.txt), for a fleet run")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--out", help="report directory (plots, montages, per_frame.csv, metrics.json); "
                   "in a fleet run (required): the pooled metrics, bags.csv, fleet.json, manifest")
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
    add_pool_arguments(p, "shard")
    p.add_argument("--shard-frames", type=int_at_least(1), default=500,
                   help="fleet run: frames per shard of a dataset (default 500)")
    p.add_argument("--components-at", choices=COMPONENT_THRESHOLDS, default="best_f1",
                   help="threshold of the component metrics (sIoU, PPV, mean F1): the pooled "
                   "pixel best-F1 one (SMIYC, default) or the model's own, i.e. the obstacle list "
                   "the node publishes (a fleet run always uses the model's)")
    p.add_argument("--regions", choices=("model", "off"), default="model",
                   help="the region-evidence stage after the model: the one the model file "
                   "carries (default) or none")
    p.add_argument("--depth-regions", choices=("model", "off"), default="model",
                   help="the depth region stage (runtime/depth_regions.py) on frames with aligned "
                   "depth (OUT/depth/{id}.png + camera_info.yaml): the one the model file carries "
                   "(default) or none")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _is_fleet(a: argparse.Namespace) -> bool:
    from pathlib import Path

    spec = a.data[0]
    return (len(a.data) > 1 or a.workers > 1 or a.dask is not None or names_many(spec)
            or (a.layout == "generic" and Path(spec).is_dir() and not (Path(spec) / "images").exists()
                and any((c / "images").is_dir() for c in Path(spec).iterdir())))


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.data.layouts import parse_layout_option
    from flowclas_ros.eval.evaluate import evaluate
    from flowclas_ros.eval.report import format_summary, to_json

    layout_options = dict(parse_layout_option(o) for o in a.layout_opt)
    if _is_fleet(a):
        from flowclas_ros.eval.fleet import run_fleet
        from flowclas_ros.eval.fleet.report import format_fleet_summary

        if a.out is None:
            raise DatasetError("evaluate of several datasets needs --out DIR (the pooled answer, "
                               "the per-dataset table and the manifest a rerun resumes from)")
        if a.max_frames is not None:
            raise DatasetError("--max-frames applies to one dataset, not to a fleet run")
        settings = dict(layout=a.layout, layout_options=layout_options,
                        min_pred_area=a.min_pred_area, min_gt_area=a.min_gt_area,
                        image_score=a.image_score, image_top_k=a.image_top_k, regions=a.regions)
        result = run_fleet("evaluate", a.data, a.out, a.model, settings, workers=a.workers,
                           cluster=a.dask, providers=[p for p in a.providers.split(",") if p],
                           threads=a.threads, progress=not a.quiet, shard_frames=a.shard_frames)
        print(to_json(result) if a.json else format_fleet_summary(result))
        return 1 if result["failed"] else 0

    result = evaluate(a.data[0], a.model, out_dir=a.out, layout=a.layout,
                      providers=[p for p in a.providers.split(",") if p],
                      min_pred_area=a.min_pred_area, min_gt_area=a.min_gt_area,
                      max_frames=a.max_frames, progress=not a.quiet,
                      image_score=a.image_score, image_top_k=a.image_top_k,
                      layout_options=layout_options, regions=a.regions,
                      component_threshold=a.components_at, depth_regions=a.depth_regions)
    print(to_json(result) if a.json else format_summary(result))
    return 0
