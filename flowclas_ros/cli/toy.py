"""`flowclas-ros toy`: generate the small procedural toy dataset (tests, demo)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy", help="generate the small procedural toy dataset (tests, demo)")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--val", type=int, default=20)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--bank", type=int, default=60, help="number of OE cut-outs")
    p.add_argument("--size", default="160x128", help="WxH")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
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
