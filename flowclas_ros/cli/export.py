"""`flowclas-ros export`: a checkpoint -> one ONNX file with metadata, optionally checked against torch."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to one ONNX file with metadata")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--check", action="store_true", help="compare ONNX Runtime with torch")
    p.add_argument("--check-data", help="generic-layout dir of frames for --check "
                   "(default: the checkpoint's val or train data)")
    p.add_argument("--check-frames", type=int, default=4)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
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
