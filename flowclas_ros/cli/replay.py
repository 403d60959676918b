"""`flowclas-ros replay`: the detector over a recorded rosbag2 into an output bag, with metrics against a ground-truth topic."""
from __future__ import annotations

import argparse

from flowclas_ros.cli.arguments import int_at_least
from flowclas_ros.runtime.node_interface import default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the detector over a recorded rosbag2 into an output "
                       "bag (+ metrics against a ground-truth topic)")
    p.add_argument("bag", help="rosbag2 directory, or a .mcap / .db3 file")
    p.add_argument("--out", required=True, help="output bag directory (MCAP)")
    p.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: the bag's "
                   "only image topic)")
    p.add_argument("--gt-topic", help="mono8 ground truth (0/1/255) matched by header stamp: "
                   "metrics as flowclas-ros evaluate")
    p.add_argument("--report", help="report directory (curves, worst-frame montage, per-frame "
                   "scores over time, frames.csv, metrics.json)")
    p.add_argument("--namespace", default="", help="outputs are <namespace>/flowclas_detector/"
                   "... (default: none, the node's default names)")
    p.add_argument("--threshold", type=float, help="obstacle threshold (default: the model's)")
    p.add_argument("--min-area", type=int, default=50, help="min obstacle area in pixels, as "
                   "the node's min_obstacle_area (50)")
    p.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime CPU threads, as the "
                   "node's intra_op_threads (0: all cores)")
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
    p.add_argument("--force", action="store_true", help="replace an existing output bag")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.eval.replay import replay
    from flowclas_ros.eval.replay_report import format_summary
    from flowclas_ros.eval.report import to_json

    result = replay(a.bag, a.out, a.model, image_topic=a.image_topic, gt_topic=a.gt_topic,
                    report=a.report, force=a.force,
                    providers=[p for p in a.providers.split(",") if p], progress=not a.quiet,
                    namespace=a.namespace, threshold=a.threshold, min_area=a.min_area,
                    threads=a.threads, depth_topic=a.depth_topic,
                    camera_info_topic=a.camera_info_topic, max_points=a.max_points,
                    regions=a.regions)
    print(to_json(result) if a.json else format_summary(result))
    return 0
