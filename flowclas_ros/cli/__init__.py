"""`flowclas-ros` command line: one module per verb in this package, each a thin layer over library calls.

A verb module has `register(sub)` (its argument parser, which sets `func=run`) and `run(args)`,
and imports heavy dependencies (torch, onnxruntime, pybullet) inside `run`, so `--help` and the
runtime-only verbs start fast on a robot without torch. Errors the user can fix (bad config key,
missing model, missing data) print one line `flowclas-ros: error: ...` and exit 2, with no
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

# In `flowclas-ros --help` order: the robot engineer's workflow, then the tooling.
VERBS: tuple[str, ...] = ("train", "calibrate", "export", "quantize", "regions", "zoom", "detect", "evaluate",
                          "replay", "bench", "card", "sim", "coco_bank", "toy", "demo", "node_params")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem the user can fix: reported in one line, no traceback."""
    from flowclas_ros.config import ConfigError
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.runtime.images import ImageError
    from flowclas_ros.runtime.model_info import ModelFileError
    from flowclas_ros.runtime.quantization import QuantizeError
    from flowclas_ros.training.checkpoint import CheckpointError, TrainingError

    return (ConfigError, DatasetError, ImageError, ModelFileError, CheckpointError,
            QuantizeError, TrainingError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowclas-ros", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    for verb in VERBS:
        importlib.import_module(f"{__name__}.{verb}").register(sub)
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

