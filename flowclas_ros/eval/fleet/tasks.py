"""Fleet tasks: one shard (a bag, or a range of a dataset's frames) scored on a worker.

:func:`run_shard` is what the pool (:func:`flowclas_ros.data.pool.run_tasks`) sends to local
processes or Dask workers. It hashes the shard's content (skipping it when the driver's manifest
already holds that key), scores its frames through the shared runtime path (a bag: the node's
``run_frame`` via :func:`flowclas_ros.eval.replay.score_bag`; a dataset: ``Detector.heatmap``
as ``evaluate``), and returns plain data: the shard's summary, its per-frame rows and its
pooled statistics as arrays. Each worker process opens the detector once and keeps it for the
next shards, with its share of the cores (:func:`flowclas_ros.data.pool.worker_threads`);
memory per worker is the detector, one frame's arrays and one shard's statistics, whatever the
number of shards.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.fleet.inputs import content_hash, input_files, stat_signature
from flowclas_ros.eval.fleet.manifest import shard_key

__all__ = ["Shard", "run_shard", "shard_files"]

WORST_FRAMES = 8  # worst frames kept per shard

_local = threading.local()


@dataclass(frozen=True)
class Shard:
    """One unit of work. ``kind``: "replay" (``input`` a bag) or "evaluate" (``input`` a
    dataset root, ``frames`` a [start, stop) range of its sorted frames)."""

    kind: str
    input: str
    unit: int  # index of the input among the run's inputs
    name: str  # the input's unique short name (output bag, frames CSV)
    model: str
    model_hash: str
    settings: dict  # what changes the numbers; part of the key
    providers: tuple[str, ...] = ("cpu",)
    threads: int = 0  # 0: the worker's share of its cores
    frames: Optional[tuple[int, int]] = None
    out: Optional[str] = None  # output bag (replay)
    force: bool = False
    content: Optional[str] = None  # known content hash (driver's manifest), else computed
    done: frozenset = frozenset()  # keys the manifest already holds

    @property
    def label(self) -> str:
        return self.name if self.frames is None else f"{self.name}[{self.frames[0]}:{self.frames[1]}]"

    def key(self, content: str) -> str:
        return shard_key(content, self.model_hash, {"kind": self.kind, "frames": self.frames,
                                                     **self.settings})


def _dataset_frames(shard: Shard) -> list[Any]:
    from flowclas_ros.eval.evaluate import eval_items

    s = shard.settings
    frames, _ = eval_items(shard.input, s["layout"], None, s.get("layout_options") or None)
    lo, hi = shard.frames if shard.frames is not None else (0, len(frames))
    if hi > len(frames):
        raise ValueError(f"{shard.input} has {len(frames)} frames, fewer than when the run began")
    return frames[lo:hi]


def shard_files(shard: Shard) -> tuple[list[Path], Path]:
    """(the files whose content is the shard, the root their names are relative to)."""
    root = Path(shard.input)
    if shard.kind == "replay":
        return input_files(root), root
    files = []
    for f in _dataset_frames(shard):
        files.append(Path(f.sample.image_path))
        for extra in ("label_path", "depth_path"):
            if getattr(f.sample, extra, None) is not None:
                files.append(Path(getattr(f.sample, extra)))
    return files, root


def _detector(shard: Shard) -> Any:
    """This worker's detector for the shard's model and settings (opened once per process)."""
    from flowclas_ros.data.pool import worker_threads
    from flowclas_ros.deploy.open_model import open_detector

    s = shard.settings
    threads = shard.threads or worker_threads()
    spec = (shard.model, shard.providers, s.get("threshold"), s.get("min_area", 0), threads,
            s.get("regions", "model"))
    cached = getattr(_local, "detector", None)
    if cached is None or cached[0] != spec:
        kw = {"threads": threads} if not shard.model.endswith(".pt") else {}
        det = open_detector(shard.model, providers=list(shard.providers), threshold=s.get("threshold"),
                            min_area=s.get("min_area", 0), regions=s.get("regions", "model"), **kw)
        _local.detector = cached = (spec, det)
    return cached[1]


def _score_dataset(shard: Shard, det: Any) -> tuple[dict, Any]:
    from collections import Counter

    from flowclas_ros.data.depth_files import read_camera_info
    from flowclas_ros.data.pool import frames_done
    from flowclas_ros.eval.evaluate import read_eval_depth, read_eval_frame
    from flowclas_ros.eval.pooled_stats import PooledStats
    from flowclas_ros.runtime.scene_alarm import scene_summary

    s = shard.settings
    stats = PooledStats(det.threshold, s["min_pred_area"], s["min_gt_area"],
                        image_top_k=s["image_top_k"], components=True)
    rows = []
    intrinsics = read_camera_info(shard.input)  # with depth/{id}.png: the depth region stage, as evaluate
    depth_stage: Counter[str] = Counter()
    t0 = time.perf_counter()
    start = shard.frames[0] if shard.frames else 0
    for i, fr in enumerate(_dataset_frames(shard)):
        rgb, label = read_eval_frame(fr)
        depth = read_eval_depth(fr, rgb.shape[:2], intrinsics)
        t1 = time.perf_counter()
        heat, stage = det.with_depth(det.heatmap(rgb, "rgb8"), depth, intrinsics)
        depth_stage[stage] += 1
        row = stats.add(fr.id, heat, label, (time.perf_counter() - t1) * 1e3, rgb)
        row.update({"index": start + i,
                    "image_score": stats.image_score(len(stats) - 1, s["image_score"])})
        rows.append(row)
        frames_done()
    wall = time.perf_counter() - t0
    return {"frames": len(rows), "skipped_frames": 0, "scored_frames": len(rows),
            "wall_s": wall, "fps": len(rows) / wall if wall > 0 else float("nan"),
            "scene": scene_summary([r["flagged_share"] for r in rows]),
            "warnings": [], "notes": [], "per_frame": rows,
            "depth_stage": dict(sorted(depth_stage.items()))}, stats


def run_shard(shard: Shard) -> dict:
    """Score one shard; returns {"key", "content", "signature", "reused", "summary",
    "per_frame", "stats" (arrays, meta) or None}. ``reused``: the manifest already holds the key
    (nothing scored)."""
    from flowclas_ros.eval.report import worst_first

    files, root = shard_files(shard)
    signature = stat_signature(files)
    content = shard.content or content_hash(files, root)
    key = shard.key(content)
    base = {"key": key, "content": content, "signature": signature, "label": shard.label}
    if key in shard.done:
        return {**base, "reused": True}
    det = _detector(shard)
    if shard.kind == "replay":
        from flowclas_ros.eval.replay import ReplayOptions, score_bag

        opts = ReplayOptions(providers=shard.providers, **{k: v for k, v in shard.settings.items()})
        summary, stats = score_bag(shard.input, det, opts, shard.out, shard.force)
    else:
        summary, stats = _score_dataset(shard, det)
    rows = summary.pop("per_frame")
    scored = [r for r in rows if "f1_model" in r]
    summary["worst_frames"] = [{"id": r["id"], "f1_model": r["f1_model"], "ap": r["ap"]}
                               for r in worst_first(scored, "f1_model")[:WORST_FRAMES]]
    summary["flagged_shares"] = [r["flagged_share"] for r in rows]
    summary["providers"] = list(det.providers)
    summary["model_version"] = det.info.model_version
    return {**base, "reused": False, "summary": summary, "per_frame": rows,
            "stats": stats.state() if stats is not None and len(stats) else None}
