"""`flowclas-ros coco-bank`: an outlier-exposure cut-out bank from COCO instance annotations."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coco-bank", help="make an outlier-exposure cut-out bank from COCO instances")
    p.add_argument("instances_json", type=Path, help="e.g. annotations/instances_train2017.json")
    p.add_argument("images_dir", type=Path, help="e.g. train2017/")
    p.add_argument("out_dir", type=Path, help="cut-out bank directory to fill")
    p.add_argument("--min-side", type=int, default=480)
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.outliers.coco_cutouts import coco_cutouts

    paths = coco_cutouts(a.instances_json, a.images_dir, a.out_dir, a.min_side, a.limit)
    print(f"wrote {len(paths)} cut-outs to {a.out_dir}")
    return 0
