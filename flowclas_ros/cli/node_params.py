"""`flowclas-ros node-params`: the node's parameters file, written from the parameter table."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node-params", help="write the node's parameters YAML (every parameter, its "
                       "default and description) from runtime/node_interface.py")
    p.add_argument("--out", type=Path, help="file to write, e.g. config/detector.yaml (default: stdout)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.runtime.params_file import params_file_text

    text = params_file_text()
    if a.out is None:
        print(text, end="")
        return 0
    a.out.write_text(text)
    print(f"wrote {a.out}")
    return 0
