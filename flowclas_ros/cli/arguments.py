"""Argument types shared by the verbs: a bad value is argparse's one-line error and exit 2."""
from __future__ import annotations

import argparse
import math


def int_at_least(minimum: int):
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # how argparse names the type in its error
    return parse


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def add_pool_arguments(p: argparse.ArgumentParser, unit: str) -> None:
    """--workers / --dask / --threads: how a fleet run (many inputs) is spread out."""
    p.add_argument("--workers", type=int_at_least(0), default=0,
                   help=f"local processes, one {unit} each at a time, each with its share of the "
                   "cores (default 0: one per core, at most one per input; 1: this process)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster: a scheduler address "
                   "(tcp://host:8786), or 'local' for --workers processes on this machine "
                   "(needs the cluster extra)")
    p.add_argument("--threads", type=int_at_least(0), default=0, help="ONNX Runtime CPU threads "
                   "per worker (0: the worker's share of its machine's cores)")


def names_many(spec: str) -> bool:
    """A spec that names several inputs: a list file (@file, .txt, .list) or a glob."""
    from pathlib import Path

    return (spec.startswith("@") or Path(spec).suffix in (".txt", ".list")
            or (any(c in spec for c in "*?[") and not Path(spec).exists()))
