"""The ``rosbag2`` dataset layout: train, calibrate and quantise on the robot's own logs.

The layout (:func:`rosbag2_layout`) takes ``topic`` (default: the bag's only image topic) and
``stride`` (every n-th message of the topic). It extracts the selected frames ONCE into a cache of
lossless PNGs and returns ordinary generic-layout samples (unlabelled: inlier frames for training).
Why a cache: every consumer of samples (trainer, calibration, export parity check, evaluator) reads
frames by path with random access, which an MCAP log cannot give cheaply (a random frame costs a
chunk read and decompression); the cache makes epochs after the first free and keeps the rest of
the pipeline unchanged. The cache key is the bag's resolved path, the name, size and mtime of each
of its files, the topic and the stride, so a re-recorded or edited bag is extracted again.
Location: ``$XDG_CACHE_HOME/flowclas_ros/bags`` (default ``~/.cache/flowclas_ros/bags``); entries
are written to a temporary directory and renamed into place, so an interrupted extraction never
leaves a half cache and concurrent ranks do not clash.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from flowclas_ros.data.files import DatasetError, PathLike, write_png
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import Sample
from flowclas_ros.data.rosbag import Bag, BagFrameError, decode_frame, deserialize
from flowclas_ros.runtime.images import ImageError
from flowclas_ros.runtime.pipeline import stamp_ns

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the extraction changes what a cached frame holds


def bag_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flowclas_ros" / "bags"


def _cache_key(bag: Path, topic: str, stride: int) -> str:
    bag = bag.resolve()
    files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": CACHE_VERSION, "bag": str(bag), "files": stats, "topic": topic,
                       "stride": stride}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def extract_frames(bag: Bag, topic: str, stride: int, out: Path) -> dict:
    """Write every ``stride``-th message of ``topic`` as ``out/images/{n:07d}_{stamp}.png``
    (n: the message's index in the topic) and ``out/manifest.json``; returns the manifest.
    Frames that fail to deserialize or decode are skipped and counted by kind."""

    skipped: Counter[str] = Counter()
    frames = 0
    for n, message in enumerate(bag.messages([topic])):
        if n % stride:
            continue
        try:
            msg = deserialize(message)
            rgb = decode_frame(message.msgtype, msg)
        except BagFrameError as exc:
            skipped[exc.kind] += 1
            continue
        except ImageError as exc:
            skipped[exc.kind] += 1
            continue
        write_png(out / "images" / f"{n:07d}_{stamp_ns(msg)}.png", rgb)
        frames += 1
    lost = bag.lost(topic)
    if lost:  # unread messages would have contributed every stride-th of them
        skipped[bag.loss_reason or "unreadable"] += -(-lost // stride)
    manifest = {"bag": str(bag.path.resolve()), "topic": topic, "stride": stride,
                "frames": frames, "messages": bag.delivered[topic], "skipped": dict(skipped),
                "notes": bag.notes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def extracted_frames(root: PathLike, topic: Optional[str] = None, stride: int = 1) -> Path:
    """The cache directory holding the selected frames of bag ``root``, extracted now if
    needed (DatasetError when the topic has no readable frame)."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise DatasetError(f"rosbag2 layout: stride must be an integer >= 1, got {stride!r}")
    bag = Bag(root)
    topic = bag.pick_image_topic(topic, how_to_choose="choose one with the data source's "
                                 "`topic:` key")
    cache = bag_cache_root() / _cache_key(bag.path, topic, stride)
    if not (cache / "manifest.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f".{cache.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("extracting every %d-th frame of %s from %s to %s", stride, topic, bag.path, cache)
        try:
            manifest = extract_frames(bag, topic, stride, tmp)
            if manifest["frames"] == 0:
                raise DatasetError(f"no readable frame on {topic} in bag {bag.path} "
                                   f"(skipped: {manifest['skipped'] or 'none'}; "
                                   f"{'; '.join(bag.notes) or 'the topic is empty'})")
            try:
                tmp.rename(cache)
            except OSError:  # another process finished first: use its cache
                if not (cache / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if manifest["skipped"]:
            log.warning("%s: %d frames of %s skipped %s; %s", bag.path,
                        sum(manifest["skipped"].values()), topic, manifest["skipped"],
                        "; ".join(manifest["notes"]))
    return cache


def _extract_task(source: tuple[str, Optional[str], int]) -> str:
    return str(extracted_frames(*source))


def extract_bags(sources: Sequence[tuple[PathLike, Optional[str], int]], workers: int = 1,
                 cluster: Optional[str] = None) -> dict[str, str]:
    """Extract many bags' frames at once on the work pool (:mod:`flowclas_ros.data.pool`), one
    bag per worker process: (bag, topic, stride) -> its cache directory. A bag that fails is
    logged and left out (the layout meets the same error again, with its own message, when
    the bag is read). Bags already in the cache cost a directory listing."""
    from flowclas_ros.data.pool import run_tasks

    items = [(str(root), topic, int(stride)) for root, topic, stride in sources]
    done: dict[str, str] = {}
    for o in run_tasks(_extract_task, items, workers, cluster):
        if o.ok:
            done[items[o.index][0]] = o.value
        else:
            log.warning("extracting %s failed: %s", items[o.index][0], o.error)
    return done


def rosbag2_layout(root: PathLike, topic: Optional[str] = None, stride: int = 1,
                   require_labels: bool = False) -> list[Sample]:
    """The frames of a rosbag2 log as unlabelled samples (inlier frames for training).

    ``topic``: image topic (Image or CompressedImage; default the bag's only image topic);
    ``stride``: keep every n-th message. Frames are extracted once to :func:`bag_cache_root`
    (many bags at once: :func:`extract_bags`).
    """
    if require_labels:
        raise DatasetError(f"the rosbag2 layout gives unlabelled frames ({root}); "
                           "label a bag with flowclas-ros replay --gt-topic instead")
    return generic_layout(extracted_frames(root, topic, stride))
