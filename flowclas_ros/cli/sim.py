"""`flowclas-ros sim`: render the PyBullet obstacle benchmark (frames, or the OE cut-out bank)."""
from __future__ import annotations

import argparse

from flowclas_ros.cli.arguments import int_at_least


def register(sub: argparse._SubParsersAction) -> None:
    from flowclas_ros.sim.scenes import SPLITS, WORLDS
    from flowclas_ros.sim.topics import CAMERA_INFO_TOPIC, DEPTH_TOPIC, GT_TOPIC, IMAGE_TOPIC

    s = sub.add_parser("sim", help="render the PyBullet obstacle benchmark (frames, or the OE cut-out bank)")
    s.add_argument("--split", required=True, choices=(*SPLITS, "oe"),
                   help="train: inlier frames; val/test: frames with obstacles; reserved: the "
                   "generalisation split (obstacles are the reserved named objects: ducks, teddies, "
                   "balls, mugs, lego, jenga, cubes, spheres); oe: cut-out bank")
    s.add_argument("--world", type=_world_name, default="courtyard", metavar="WORLD",
                   help=f"{' or '.join(WORLDS)} (regolith, rocks, low sun, obstacles down to a few "
                   "pixels at 20 m), or gen-N: a new terrain world drawn from seed N (ground, sky, "
                   "sun, camera, clutter and obstacles all drawn); rules: docs/sim-worlds.md")
    s.add_argument("-n", type=int_at_least(1), required=True, help="number of frames (or cut-outs)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bag", action="store_true",
                   help=f"also write a rosbag2 (MCAP) with {IMAGE_TOPIC}, {GT_TOPIC}, the aligned depth "
                   f"{DEPTH_TOPIC} (32FC1 m) and {CAMERA_INFO_TOPIC} to OUT/bag")
    s.add_argument("--depth", action="store_true",
                   help="also write each frame's aligned depth as a stereo camera measures it (noise, "
                   "quantisation, holes, edge flicker: data/depth_noise.py) to OUT/depth/{id}.png "
                   "(16-bit mm, 0 = no reading) and the intrinsics to OUT/camera_info.yaml; with "
                   "--bag the bag's depth topic holds the same (16UC1) instead of exact 32FC1")
    s.add_argument("--workers", type=int_at_least(1), default=1, help="rendering processes")
    s.add_argument("--camera", choices=("clean", "robot"), default="clean",
                   help="camera model applied to every frame: clean (the fixed benchmark renders) or "
                   "robot (exposure, vignetting, motion blur, shot + read noise, JPEG; "
                   "data/camera_model.py ROBOT_CAMERA; a gen-N world's own drawn camera)")
    s.add_argument("--noise", type=float, default=0.0, metavar="STD",
                   help="Gaussian read noise std in grey levels, replacing the camera model's (e.g. 6)")
    s.add_argument("--bag-jpeg", type=int, metavar="QUALITY",
                   help="with --bag: the image topic as JPEG CompressedImage of this quality, as "
                   "robots log (the dataset then holds the same decoded pixels)")
    s.set_defaults(func=run)


def _world_name(value: str) -> str:
    from flowclas_ros.sim.family import check_world

    try:
        check_world(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def run(a: argparse.Namespace) -> int:
    import dataclasses

    from flowclas_ros.data.camera_model import CameraModel
    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.sim.family import robot_camera
    from flowclas_ros.sim.generate import build_oe_bank, generate_split

    camera = robot_camera(a.world) if a.camera == "robot" else CameraModel()
    if a.noise:
        try:
            camera = dataclasses.replace(camera, read_noise=(a.noise, a.noise))
        except ValueError as exc:
            raise DatasetError(f"--noise: {exc}") from None
    if a.bag_jpeg is not None and not (a.bag and 5 <= a.bag_jpeg <= 100):
        raise DatasetError("--bag-jpeg needs --bag and a quality in 5..100")
    if a.split == "oe":
        if a.world != "courtyard":
            raise DatasetError("--world applies to frame splits; OE cut-outs are rendered alone, with no world")
        if a.bag:
            raise DatasetError("--bag applies to frame splits (train, val, test), not to the oe cut-out bank")
        if a.depth:
            raise DatasetError("--depth applies to frame splits (train, val, test), not to the oe cut-out bank")
        paths = build_oe_bank(a.out, a.n, seed=a.seed, workers=a.workers)
        print(f"sim oe: {len(paths)} cut-outs of random_urdfs/000..499 in {a.out}")
        return 0
    s = generate_split(a.out, a.split, a.n, seed=a.seed, bag=a.bag, workers=a.workers,
                       camera=None if camera.is_identity else camera, bag_jpeg=a.bag_jpeg, world=a.world,
                       depth=a.depth)
    print(f"sim {a.world} {a.split}: {s['frames']} frames in {a.out}{' (+ bag/)' if a.bag else ''}, "
          f"{s['seconds_per_frame']:.3f} s/frame")
    print(f"  frames with visible anomalies: {s['anomaly_frames']}")
    print(f"  fully-occluded frames (anomalies placed, none visible): {s['fully_occluded_frames']}"
          + (f" {s['fully_occluded_ids']}" if s["fully_occluded_ids"] else ""))
    print(f"  anomaly pixel fraction: {s['anomaly_pixel_fraction']:.5f}")
    return 0
