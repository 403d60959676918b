"""`flowclas-ros bench`: time the detector per backend and frame size."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the detector per backend and frame size")
    p.add_argument("--model", help="ONNX file (default: the shipped model)")
    p.add_argument("--checkpoint", help="the model's .pt checkpoint, to time torch eager too")
    p.add_argument("--int8-model", action="append", default=[], metavar="Q.onnx",
                   help="an int8 model (`flowclas-ros quantize`) to time too; repeatable: rows "
                   "ort_int8, ort_int8_2, ...")
    p.add_argument("--other-model", action="append", default=[], metavar="M.onnx",
                   help="another model to time in the same run, e.g. --model fast --other-model "
                   "accurate; repeatable: rows ort_other, ort_other_2, ...")
    p.add_argument("--sizes", default="640x480", help="WxH list, e.g. 640x480,1280x720")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--providers", default="cpu")
    p.add_argument("--threads", default="0", help="ONNX Runtime intra-op thread settings to "
                   "compare, e.g. 0,1,2 (0 = all cores)")
    p.add_argument("--node-seconds", type=float, default=0.0,
                   help="also run the node end to end for this long (needs the ros extra)")
    p.add_argument("--node-rate", type=float, default=30.0, help="camera rate for the node run")
    p.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a node parameter for the node run, e.g. intra_op_spinning=false")
    p.add_argument("--node-depth", action="store_true",
                   help="node run with use_depth: the camera also publishes aligned depth (16UC1) "
                   "and CameraInfo, ~/obstacle_points and ~/obstacles are subscribed, and latency "
                   "is taken at ~/obstacles")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.tools.bench import backbone_share, format_table, parse_sizes, run_bench, sample_frame

    sizes = parse_sizes(a.sizes)
    threads = [int(v) for v in a.threads.split(",")]
    result = run_bench(a.model, a.checkpoint, sizes, a.frames, a.providers.split(","), threads,
                       int8_models=a.int8_model, other_models=a.other_model)
    if a.checkpoint:
        result.update(backbone_share(a.checkpoint))
    if a.node_seconds > 0:
        from flowclas_ros.ros.bench_node import node_benchmark

        h, w = sizes[0]
        params = {}
        for item in a.node_param:
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
        depth = None
        if a.node_depth:
            from flowclas_ros.tools.bench import sample_depth

            depth = sample_depth(h, w)
        result.update(node_benchmark(Path(result["model"]), sample_frame(h, w), a.node_rate, a.node_seconds,
                                     params=params, depth=depth))
    print(json.dumps(result) if a.json else format_table(result, sizes))
    return 0
