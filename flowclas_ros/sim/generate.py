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
import functools
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.generic import write_sample
from flowclas_ros.data.outliers import save_cutout
from flowclas_ros.runtime.labels import VOID
from flowclas_ros.sim.scenes import SPLITS, _check_split, render_cutout, render_frame
from flowclas_ros.sim.topics import FRAME_ID, GT_TOPIC, IMAGE_TOPIC

__all__ = ["build_oe_bank", "generate_split"]

PathLike = str | Path
T = TypeVar("T")


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
def _bag_writer(path: Path) -> Iterator[Callable[[int, np.ndarray, np.ndarray], None]]:
    """A rosbag2 (MCAP) writer of (stamp_ns, rgb, label): image and ground truth share stamp and frame."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from flowclas_ros.data.rosbag import IMAGE, header_message, image_message, typestore

    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = [(writer.add_connection(topic, IMAGE, typestore=store), encoding)
                  for topic, encoding in ((IMAGE_TOPIC, "rgb8"), (GT_TOPIC, "mono8"))]

        def write(stamp_ns: int, rgb: np.ndarray, label: np.ndarray) -> None:
            for (connection, encoding), array in zip(topics, (rgb, label)):
                msg = image_message(array, encoding, header_message(stamp_ns, FRAME_ID))
                writer.write(connection, stamp_ns, store.serialize_cdr(msg, IMAGE))

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


def generate_split(
    out: PathLike, split: str, n: int, seed: int = 0, bag: bool = False, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Render frames 0..n-1 of ``split`` into ``out`` (generic layout + frames.jsonl [+ bag/]).

    Returns (and writes to summary.json) the frame counts, the fully-occluded frames and the
    pooled anomaly pixel fraction, which the benchmark report must state.
    """
    _check_split(split, SPLITS)
    _check_counts(n, workers)
    out = Path(out)
    if bag and (out / "bag").exists():
        raise DatasetError(f"{out / 'bag'} already exists; remove it or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    stats = _SplitStats()
    start = time.perf_counter()
    job = functools.partial(render_frame, split, seed=seed)
    with open(out / "frames.jsonl", "w", encoding="utf-8") as frames_file, contextlib.ExitStack() as stack:
        write_bag = stack.enter_context(_bag_writer(out / "bag")) if bag else None
        for rgb, label, meta in _ordered_map(job, n, workers, progress, f"sim {split}"):
            write_sample(out, meta["id"], rgb, label)
            frames_file.write(json.dumps(meta) + "\n")
            if write_bag is not None:
                write_bag(meta["stamp_ns"], rgb, label)
            stats.add(label, meta)
    summary = {"split": split, "seed": seed, **stats.summary()}
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
