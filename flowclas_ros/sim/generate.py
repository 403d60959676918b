"""Writing the benchmark to disk: frame splits (+ rosbag2) and the outlier-exposure cut-out bank.

Why this exists: rendering one frame is a pure function of (split, index, seed); turning n of
them into a dataset is a separate job. This module fans the renders out over spawned worker
processes while keeping their order, writes the generic layout and per-frame metadata (plus,
on request, an MCAP bag of image and ground truth on the benchmark topics), and tallies the split
statistics the benchmark report must state, notably the fully-occluded frames.

tqdm and rosbags are imported lazily, so importing this module (for the CLI) stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np

from flowclas_ros.data.camera_model import CameraModel
from flowclas_ros.data.depth_files import CAMERA_INFO_FILE, write_camera_info, write_depth
from flowclas_ros.data.depth_noise import StereoDepthNoise, frame_depth_rng, to_millimetres
from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.generic import write_sample
from flowclas_ros.data.outliers.cutouts import save_cutout
from flowclas_ros.runtime.labels import VOID
from flowclas_ros.sim.camera import Camera
from flowclas_ros.sim.family import check_world, terrain
from flowclas_ros.sim.scenes import SPLITS, _check_split, render_cutout, render_frame
from flowclas_ros.sim.topics import CAMERA_INFO_TOPIC, DEPTH_TOPIC, FRAME_ID, GT_TOPIC, IMAGE_TOPIC

__all__ = ["build_oe_bank", "generate_split"]

PathLike = str | Path
T = TypeVar("T")
CAMERA_STREAM = 11  # random stream of the camera model, apart from the scene's


def _ordered_map(job: Callable[[int], T], n: int, workers: int, progress: bool, desc: str) -> Iterator[T]:
    """``job(0..n-1)`` in order, in this process or in ``workers`` spawned ones (each with its own client)."""
    from tqdm import tqdm

    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar, contextlib.ExitStack() as stack:
        if workers > 1:
            # spawn, not fork: a forked child would inherit this process's pybullet client.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, n)))
            results: Iterator[T] = pool.imap(job, range(n))
        else:
            results = map(job, range(n))
        for result in results:
            bar.update()
            yield result


def _check_counts(n: int, workers: int) -> None:
    if n < 1 or workers < 1:
        raise ValueError(f"n and workers must be >= 1, got n={n}, workers={workers}")


@contextlib.contextmanager
def _bag_writer(path: Path, jpeg_quality: Optional[int] = None
                ) -> Iterator[Callable[[int, np.ndarray, np.ndarray, np.ndarray, Camera], np.ndarray]]:
    """A rosbag2 (MCAP) writer of (stamp_ns, rgb, label, depth, camera) -> the RGB frame the bag
    holds. Image, ground truth, aligned depth (32FC1 metres, inf = sky; or, measured, 16UC1
    millimetres, 0 = no reading) and CameraInfo share
    stamp and frame, as an RGB-D camera publishes them; with ``jpeg_quality`` the image topic is a
    JPEG CompressedImage (as robots log), and the frame returned is the JPEG's decoded pixels."""
    from flowclas_ros.data.rosbag import (
        CAMERA_INFO,
        COMPRESSED_IMAGE,
        IMAGE,
        camera_info_message,
        chunk_crc_writer,
        header_message,
        image_message,
        jpeg_message,
        typestore,
    )

    store = typestore()
    image_type = IMAGE if jpeg_quality is None else COMPRESSED_IMAGE
    with chunk_crc_writer(path) as writer:
        image_conn = writer.add_connection(IMAGE_TOPIC, image_type, typestore=store)
        gt_conn = writer.add_connection(GT_TOPIC, IMAGE, typestore=store)
        depth_conn = writer.add_connection(DEPTH_TOPIC, IMAGE, typestore=store)
        info_conn = writer.add_connection(CAMERA_INFO_TOPIC, CAMERA_INFO, typestore=store)

        def write(stamp_ns: int, rgb: np.ndarray, label: np.ndarray, depth: np.ndarray,
                  camera: Camera) -> np.ndarray:
            header = header_message(stamp_ns, FRAME_ID)
            if jpeg_quality is None:
                msg = image_message(rgb, "rgb8", header)
            else:
                msg, rgb = jpeg_message(rgb, jpeg_quality, header)
            writer.write(image_conn, stamp_ns, store.serialize_cdr(msg, image_type))
            writer.write(gt_conn, stamp_ns, store.serialize_cdr(image_message(label, "mono8", header), IMAGE))
            encoding = "16UC1" if depth.dtype == np.uint16 else "32FC1"
            writer.write(depth_conn, stamp_ns, store.serialize_cdr(image_message(depth, encoding, header), IMAGE))
            info = camera_info_message(camera.intrinsics(), header)
            writer.write(info_conn, stamp_ns, store.serialize_cdr(info, CAMERA_INFO))
            return rgb

        yield write


class _SplitStats:
    """Accumulates the numbers the benchmark report needs (notably the fully-occluded frames)."""

    def __init__(self) -> None:
        self.frames = 0
        self.anomaly_frames = 0
        self.occluded_ids: list[str] = []
        self.anomaly_pixels = 0
        self.valid_pixels = 0

    def add(self, label: np.ndarray, meta: dict[str, Any]) -> None:
        self.frames += 1
        self.anomaly_frames += meta["anomaly_pixels"] > 0
        if meta["all_occluded"]:
            self.occluded_ids.append(meta["id"])
        self.anomaly_pixels += meta["anomaly_pixels"]
        self.valid_pixels += int(np.count_nonzero(label != VOID))

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "anomaly_frames": self.anomaly_frames,
            "fully_occluded_frames": len(self.occluded_ids),
            "fully_occluded_ids": self.occluded_ids,
            "anomaly_pixel_fraction": self.anomaly_pixels / self.valid_pixels if self.valid_pixels else 0.0,
        }


def measured_depth_mm(exact: np.ndarray, camera: Camera, seed: int, frame_id: str) -> np.ndarray:
    """A rendered frame's exact depth as a stereo camera measures it: 16UC1 millimetres, 0 = no
    reading (data/depth_noise.py; the noise depends only on the seed and the frame's id)."""
    return to_millimetres(StereoDepthNoise().apply(exact, camera.focal_px, frame_depth_rng(seed, frame_id)))


def write_measured_depth(out: Path, frame_id: str, depth_mm: np.ndarray, camera: Camera) -> None:
    """A frame's measured depth in the generic layout (and the dataset's camera_info.yaml,
    written with its first frame; every frame of a split shares the intrinsics)."""
    write_depth(out, frame_id, depth_mm)
    if not (out / CAMERA_INFO_FILE).is_file():
        write_camera_info(out, camera.intrinsics())  # K as the bag's CameraInfo states it


def generate_split(
    out: PathLike, split: str, n: int, seed: int = 0, bag: bool = False, workers: int = 1, progress: bool = True,
    camera: Optional[CameraModel] = None, bag_jpeg: Optional[int] = None, world: str = "courtyard",
    depth: bool = False,
) -> dict[str, Any]:
    """Render frames 0..n-1 of ``split`` of ``world`` into ``out`` (generic layout + frames.jsonl [+ bag/]).

    ``camera``: a camera model every rendered frame goes through (its own random stream per
    frame, so the clean renders stay those of the fixed splits). ``bag_jpeg``: the bag's image
    topic as JPEG CompressedImage of that quality; the layout then stores the decoded JPEG, so
    the dataset and the bag hold the same pixels. ``depth``: also write each frame's aligned depth
    as a stereo camera would measure it (data/depth_noise.py) to ``depth/{id}.png`` and the
    camera's intrinsics to ``camera_info.yaml`` (data/depth_files.py).

    Returns (and writes to summary.json) the frame counts, the fully-occluded frames and the
    pooled anomaly pixel fraction, which the benchmark report must state.
    """
    if bag_jpeg is not None and not bag:
        raise DatasetError("bag_jpeg needs bag=True (it is the bag's image format)")
    _check_split(split, SPLITS)
    check_world(world)
    _check_counts(n, workers)
    out = Path(out)
    if bag and (out / "bag").exists():
        raise DatasetError(f"{out / 'bag'} already exists; remove it or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    stats = _SplitStats()
    start = time.perf_counter()
    job = functools.partial(render_frame, split, seed=seed, world=world, with_depth=bag or depth)
    with open(out / "frames.jsonl", "w", encoding="utf-8") as frames_file, contextlib.ExitStack() as stack:
        write_bag = stack.enter_context(_bag_writer(out / "bag", bag_jpeg)) if bag else None
        for index, (rgb, label, meta, *exact_depth) in enumerate(_ordered_map(job, n, workers, progress, f"sim {split}")):
            if camera is not None:
                rgb = camera.apply(rgb, np.random.default_rng([seed, SPLITS.index(split), index, CAMERA_STREAM]))
            frame_camera = Camera.from_metadata(meta["camera"])
            frame_depth = exact_depth[0] if exact_depth else None
            if depth:  # the bag and the layout then hold the same measured depth
                frame_depth = measured_depth_mm(frame_depth, frame_camera, seed, meta["id"])
                write_measured_depth(out, meta["id"], frame_depth, frame_camera)
            if write_bag is not None:
                rgb = write_bag(meta["stamp_ns"], rgb, label, frame_depth, frame_camera)
            write_sample(out, meta["id"], rgb, label)
            frames_file.write(json.dumps(meta) + "\n")
            stats.add(label, meta)
    summary = {"world": world, "split": split, "seed": seed, **stats.summary()}
    if world.startswith("gen-"):
        summary["world_axes"] = terrain(world).describe()
    if camera is not None:
        summary["camera"] = dataclasses.asdict(camera)
    if bag_jpeg is not None:
        summary["bag_jpeg_quality"] = bag_jpeg
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {**summary, "seconds_per_frame": (time.perf_counter() - start) / n}


def build_oe_bank(out: PathLike, n: int, seed: int = 0, workers: int = 1, progress: bool = True) -> list[Path]:
    """Render ``n`` RGBA cut-outs of random_urdfs/000..499 into ``out`` (+ cutouts.jsonl); returns the files.

    Beyond 500 cut-outs objects repeat, from new viewpoints.
    """
    _check_counts(n, workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    job = functools.partial(render_cutout, seed=seed)
    with open(out / "cutouts.jsonl", "w", encoding="utf-8") as meta_file:
        for cutout, meta in _ordered_map(job, n, workers, progress, "sim oe"):
            path = out / f"{meta['index']:05d}.png"
            save_cutout(path, cutout)
            meta_file.write(json.dumps({"file": path.name, **meta}) + "\n")
            paths.append(path)
    return paths
