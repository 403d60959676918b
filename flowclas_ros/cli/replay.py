"""`flowclas-ros replay`: the detector over recorded rosbag2 logs into output bags, with metrics against a ground-truth topic.

One bag: its output bag (``--out``) and report, as before. Several bags (or a directory of bags,
a glob, a list file, or ``--workers`` / ``--dask``): a fleet run (:mod:`flowclas_ros.eval.fleet`)
with one pooled answer and a per-bag table in ``--report``, output bags in ``--out`` when given.
"""
from __future__ import annotations

import argparse

from flowclas_ros.cli.arguments import add_pool_arguments, int_at_least, names_many
from flowclas_ros.runtime.node_interface import default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the detector over recorded rosbag2 logs into output "
                       "bags (+ metrics against a ground-truth topic); many bags: one pooled answer")
    p.add_argument("bag", nargs="+", help="rosbag2 directory or .mcap / .db3 file; several, a "
                   "directory of bags, a quoted glob or a list file (@bags.txt) for a fleet run")
    p.add_argument("--out", help="output bag directory (MCAP); in a fleet run: a directory for one "
                   "output bag per input (default there: no output bags)")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: the bag's "
                   "only image topic)")
    p.add_argument("--gt-topic", help="mono8 ground truth (0/1/255) matched by header stamp: "
                   "metrics as flowclas-ros evaluate")
    p.add_argument("--report", help="report directory (curves, worst-frame montage, per-frame "
                   "scores over time, frames.csv, metrics.json); in a fleet run (required): the "
                   "pooled metrics, bags.csv, fleet.json and the manifest a rerun resumes from")
    p.add_argument("--namespace", default="", help="outputs are <namespace>/flowclas_detector/"
                   "... (default: none, the node's default names)")
    p.add_argument("--threshold", type=float, help="obstacle threshold (default: the model's)")
    p.add_argument("--min-area", type=int, default=50, help="min obstacle area in pixels, as "
                   "the node's min_obstacle_area (50)")
    p.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    add_pool_arguments(p, "bag")
    p.add_argument("--depth-topic", help="aligned depth image (16UC1 mm / 32FC1 m) for the 3D "
                   "outputs (default: the bag's only Image topic with 'depth' in its name)")
    p.add_argument("--camera-info-topic", help="CameraInfo for the 3D outputs (default: the "
                   "bag's only CameraInfo topic)")
    p.add_argument("--max-points", type=int_at_least(1), default=default("max_obstacle_points"),
                   help="most points per obstacle cloud, as the node's max_obstacle_points "
                   f"({default('max_obstacle_points')})")
    p.add_argument("--regions", choices=("model", "off"), default="model",
                   help="the region-evidence stage after the model: the one the model file "
                   "carries (default, as the node runs it) or none")
    p.add_argument("--force", action="store_true", help="replace existing output bags")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _is_fleet(a: argparse.Namespace) -> bool:
    from pathlib import Path

    from flowclas_ros.training.recipes import is_bag

    spec = a.bag[0]
    return (len(a.bag) > 1 or a.workers > 1 or a.dask is not None or names_many(spec)
            or (Path(spec).is_dir() and not is_bag(spec)))


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.eval.report import to_json

    options = dict(image_topic=a.image_topic, gt_topic=a.gt_topic, namespace=a.namespace,
                   threshold=a.threshold, min_area=a.min_area, depth_topic=a.depth_topic,
                   camera_info_topic=a.camera_info_topic, max_points=a.max_points,
                   regions=a.regions)
    providers = [p for p in a.providers.split(",") if p]
    if _is_fleet(a):
        from flowclas_ros.eval.fleet import run_fleet
        from flowclas_ros.eval.fleet.report import format_fleet_summary

        if a.report is None:
            raise DatasetError("replay of several bags needs --report DIR (the pooled answer, "
                               "the per-bag table and the manifest a rerun resumes from)")
        result = run_fleet("replay", a.bag, a.report, a.model, options, out=a.out,
                           workers=a.workers, cluster=a.dask, providers=providers,
                           threads=a.threads, force=a.force, progress=not a.quiet)
        print(to_json(result) if a.json else format_fleet_summary(result))
        return 1 if result["failed"] else 0

    from flowclas_ros.eval.replay import replay
    from flowclas_ros.eval.replay_report import format_summary

    if a.out is None:
        raise DatasetError("replay of one bag needs --out (the output bag directory)")
    result = replay(a.bag[0], a.out, a.model, report=a.report, force=a.force,
                    providers=tuple(providers), progress=not a.quiet, threads=a.threads,
                    **options)
    print(to_json(result) if a.json else format_summary(result))
    return 0
