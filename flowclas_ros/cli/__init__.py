"""`flowclas-ros` command line: thin verbs over library calls (everything is importable/testable).

Verbs: train, calibrate, export, detect, bench, demo, toy; and, from their own modules, sim,
evaluate, card, replay, quantize. Errors the user can fix (bad config key, missing model,
missing data) print one line `flowclas-ros: error: ...` and exit 2, with no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

# Modules exposing `register_cli(subparsers)`; they must import heavy dependencies lazily.
PLUGGED_VERBS: tuple[str, ...] = ("flowclas_ros.sim.benchmark", "flowclas_ros.eval.evaluate", "flowclas_ros.deploy.model_card",
                                  "flowclas_ros.eval.replay", "flowclas_ros.deploy.quantize")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem the user can fix: reported in one line, no traceback."""
    from flowclas_ros.config import ConfigError
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.runtime.quantization import QuantizeError
    from flowclas_ros.runtime.images import ImageError
    from flowclas_ros.runtime.model_info import ModelFileError
    from flowclas_ros.training.checkpoint import CheckpointError

    return (ConfigError, DatasetError, ImageError, ModelFileError, CheckpointError,
            QuantizeError, FileNotFoundError)


def _cmd_train(a: argparse.Namespace) -> int:
    from flowclas_ros.config import load_config
    from flowclas_ros.training.loop import train

    overrides = list(a.set or [])
    if a.max_steps is not None:
        overrides.append(f"train.max_steps={a.max_steps}")
    cfg = load_config(a.config, overrides)
    out = Path(a.out or Path("runs") / Path(a.config).stem)
    ckpt = train(cfg, out, resume=a.resume, progress=not a.quiet)
    print(f"checkpoint: {ckpt}")
    return 0


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from flowclas_ros.training.calibration import recalibrate

    path = recalibrate(a.checkpoint, a.out, a.set)
    print(f"recalibrated checkpoint: {path}")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from flowclas_ros.deploy.export import check_parity, export_onnx, parity_images
    from flowclas_ros.training.checkpoint import checkpoint_config, load_checkpoint

    info = export_onnx(a.checkpoint, a.out)
    print(f"exported {a.out}  (version {info.model_version}, input {info.input_size[0]}x"
          f"{info.input_size[1]}, threshold {info.threshold:g})")
    if not a.check:
        return 0
    cfg = checkpoint_config(load_checkpoint(a.checkpoint))
    res = check_parity(a.checkpoint, a.out, parity_images(cfg, a.check_frames, a.check_data))
    ok = res["relative"] < 1e-3
    print(f"parity onnxruntime vs torch on {res['frames']} frames: max |diff| = "
          f"{res['max_abs_diff']:.3g} = {res['relative']:.3g} of the score range "
          f"({res['score_range']:.3g}) -> {'OK' if ok else 'FAIL'} (limit 1e-3)")
    return 0 if ok else 1


def _cmd_detect(a: argparse.Namespace) -> int:
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


def _cmd_toy(a: argparse.Namespace) -> int:
    from flowclas_ros.sim.toy import make_toy_cutout_bank, make_toy_dataset

    root = Path(a.out)
    size = tuple(int(v) for v in a.size.split("x"))[::-1]  # WxH on the command line
    for split, n in (("train", a.train), ("val", a.val), ("test", a.test)):
        if n:
            make_toy_dataset(root / split, split, n, seed=a.seed, size=size)
    if a.bank:
        make_toy_cutout_bank(root / "oe_bank", a.bank, seed=a.seed)
    print(f"toy dataset in {root}")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from flowclas_ros.tools.bench import (_frame, backbone_share, format_table, parse_sizes, run_bench)

    sizes = parse_sizes(a.sizes)
    threads = [int(v) for v in a.threads.split(",")]
    result = run_bench(a.model, a.checkpoint, sizes, a.frames, a.providers.split(","), threads,
                       int8_models=a.int8_model)
    if a.checkpoint:
        result.update(backbone_share(a.checkpoint))
    if a.node_seconds > 0:
        from flowclas_ros.ros.bench_node import node_benchmark

        h, w = sizes[0]
        params = {}
        for item in a.node_param:
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
        result.update(node_benchmark(Path(result["model"]), _frame(h, w), a.node_rate, a.node_seconds,
                                     params=params))
    print(json.dumps(result) if a.json else format_table(result, sizes))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from flowclas_ros.tools.demo import run_demo

    return run_demo(model=a.model, out=Path(a.out), frames=a.frames, rate_hz=a.rate,
                    live=not a.offline)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowclas-ros", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a FlowCLAS model from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--max-steps", type=int, help="override train.max_steps")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set loss.contrastive_weight=0")
    t.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("calibrate", help="change post-processing keys of a trained checkpoint "
                       "(score smoothing, log-det, calibration rule) and recalibrate")
    c.add_argument("checkpoint")
    c.add_argument("--out", required=True, help="the new checkpoint")
    c.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="e.g. --set model.score_blur_sigma=0")
    c.set_defaults(func=_cmd_calibrate)

    e = sub.add_parser("export", help="export a checkpoint to one ONNX file with metadata")
    e.add_argument("checkpoint")
    e.add_argument("--out", required=True)
    e.add_argument("--check", action="store_true", help="compare ONNX Runtime with torch")
    e.add_argument("--check-data", help="generic-layout dir of frames for --check "
                   "(default: the checkpoint's val or train data)")
    e.add_argument("--check-frames", type=int, default=4)
    e.set_defaults(func=_cmd_export)

    d = sub.add_parser("detect", help="run the detector on image files")
    d.add_argument("images", nargs="+")
    d.add_argument("--model", help="ONNX file or .pt checkpoint (default: the shipped model)")
    d.add_argument("--providers", default="cpu", help="preference list, e.g. tensorrt,cuda,cpu")
    d.add_argument("--threshold", type=float)
    d.add_argument("--min-area", type=int, default=0)
    d.add_argument("--out", help="directory for overlay PNGs")
    d.set_defaults(func=_cmd_detect)

    y = sub.add_parser("toy", help="generate the small procedural toy dataset (tests, demo)")
    y.add_argument("--out", required=True)
    y.add_argument("--train", type=int, default=200)
    y.add_argument("--val", type=int, default=20)
    y.add_argument("--test", type=int, default=20)
    y.add_argument("--bank", type=int, default=60, help="number of OE cut-outs")
    y.add_argument("--size", default="160x128", help="WxH")
    y.add_argument("--seed", type=int, default=0)
    y.set_defaults(func=_cmd_toy)

    b = sub.add_parser("bench", help="time the detector per backend and frame size")
    b.add_argument("--model", help="ONNX file (default: the shipped model)")
    b.add_argument("--checkpoint", help="the model's .pt checkpoint, to time torch eager too")
    b.add_argument("--int8-model", action="append", default=[], metavar="Q.onnx",
                   help="an int8 model (`flowclas-ros quantize`) to time too; repeatable: rows "
                   "ort_int8, ort_int8_2, ...")
    b.add_argument("--sizes", default="640x480", help="WxH list, e.g. 640x480,1280x720")
    b.add_argument("--frames", type=int, default=50)
    b.add_argument("--providers", default="cpu")
    b.add_argument("--threads", default="0", help="ONNX Runtime intra-op thread settings to "
                   "compare, e.g. 0,1,2 (0 = all cores)")
    b.add_argument("--node-seconds", type=float, default=0.0,
                   help="also run the node end to end for this long (needs the ros extra)")
    b.add_argument("--node-rate", type=float, default=30.0, help="camera rate for the node run")
    b.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a node parameter for the node run, e.g. intra_op_spinning=false")
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.set_defaults(func=_cmd_bench)

    for module in PLUGGED_VERBS:  # verbs that live beside their library code
        importlib.import_module(module).register_cli(sub)

    m = sub.add_parser("demo", help="the main job: detector on sample frames, overlay montage")
    m.add_argument("--model", help="model to use (default: shipped model, else a toy model)")
    m.add_argument("--out", default="demo_out")
    m.add_argument("--frames", type=int, default=12)
    m.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz")
    m.add_argument("--offline", action="store_true", help="no ROS: run the Detector in-process")
    m.set_defaults(func=_cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(levelname)s] %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("flowclas-ros: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.verbose:
            raise
        print(f"flowclas-ros: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
