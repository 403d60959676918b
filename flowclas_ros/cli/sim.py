"""`flowclas-ros sim`: render the PyBullet obstacle benchmark (frames, or the OE cut-out bank)."""
from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from flowclas_ros.sim.scenes import SPLITS
    from flowclas_ros.sim.topics import GT_TOPIC, IMAGE_TOPIC

    s = sub.add_parser("sim", help="render the PyBullet obstacle benchmark (frames, or the OE cut-out bank)")
    s.add_argument("--split", required=True, choices=(*SPLITS, "oe"),
                   help="train: inlier frames; val/test: frames with obstacles; oe: cut-out bank")
    s.add_argument("-n", type=_positive_int, required=True, help="number of frames (or cut-outs)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bag", action="store_true",
                   help=f"also write a rosbag2 (MCAP) with {IMAGE_TOPIC} and {GT_TOPIC} to OUT/bag")
    s.add_argument("--workers", type=_positive_int, default=1, help="rendering processes")
    s.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.sim.generate import build_oe_bank, generate_split

    if a.split == "oe":
        if a.bag:
            raise DatasetError("--bag applies to frame splits (train, val, test), not to the oe cut-out bank")
        paths = build_oe_bank(a.out, a.n, seed=a.seed, workers=a.workers)
        print(f"sim oe: {len(paths)} cut-outs of random_urdfs/000..499 in {a.out}")
        return 0
    s = generate_split(a.out, a.split, a.n, seed=a.seed, bag=a.bag, workers=a.workers)
    print(f"sim {a.split}: {s['frames']} frames in {a.out}{' (+ bag/)' if a.bag else ''}, "
          f"{s['seconds_per_frame']:.3f} s/frame")
    print(f"  frames with visible anomalies: {s['anomaly_frames']}")
    print(f"  fully-occluded frames (anomalies placed, none visible): {s['fully_occluded_frames']}"
          + (f" {s['fully_occluded_ids']}" if s["fully_occluded_ids"] else ""))
    print(f"  anomaly pixel fraction: {s['anomaly_pixel_fraction']:.5f}")
    return 0
