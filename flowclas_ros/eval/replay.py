"""`flowclas-ros replay`: a recorded bag through the node's frame pipeline, into an output bag.

A replay is three parts, one module each: reading (:mod:`~flowclas_ros.eval.replay_input`: which
topics, their messages decoded), scoring (:mod:`~flowclas_ros.eval.replay_scoring`: every frame
through the shared runtime's ``run_frame``, exactly as the node, labels paired by header stamp)
and writing (:mod:`~flowclas_ros.eval.replay_output`: the output bag with the node's own output
names, 3D outputs from an aligned depth topic). This module runs them over one pass of the bag:

* :func:`replay`: one bag, its output bag, and with a ground-truth topic the evaluator's own
  metrics and report (:class:`flowclas_ros.eval.evaluate.Evaluation`: the same numbers and
  files as ``flowclas-ros evaluate`` on the same frames);
* :func:`score_bag`: one bag of a fleet run (:mod:`flowclas_ros.eval.fleet`): the output bag only
  when asked, and the pooled statistics of its labelled frames
  (:class:`~flowclas_ros.eval.pooled_stats.PooledStats`) for the fleet's pooled metrics.

No ROS install is needed (`rosbags`). The output is written as frames are processed and closed in
a ``finally``: an interrupted run (Ctrl-C) leaves a valid bag holding the frames done so far.
Damaged input: unreadable parts of a bag are skipped (see :mod:`flowclas_ros.data.rosbag`), and
frames that cannot be decoded are skipped; both are counted per reason in ``skipped``. The summary
text, frames.csv, the over-time plot and the merge of the evaluator's metrics into the summary
are :mod:`flowclas_ros.eval.replay_report`'s job.
"""
from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.replay_input import ReplayTopics, label_stamps, select_topics
from flowclas_ros.eval.replay_output import NoOutput, OutputBag, prepare_output
from flowclas_ros.eval.replay_report import merge_metrics, write_report
from flowclas_ros.eval.replay_scoring import FrameScorer
from flowclas_ros.runtime.node_interface import default, output_topics, output_topics_3d
from flowclas_ros.runtime.scene_alarm import scene_summary

# numpy, rosbags, onnxruntime and matplotlib are imported inside the functions: the `flowclas-ros`
# parser stays fast, and the verb's own import errors name the missing extra.

__all__ = ["ReplayOptions", "replay", "score_bag"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    """How a bag is replayed: its topics, the node's parameters, the evaluator's filters.

    ``image_topic``: default the bag's only image topic (other than the ground truth, depth and
    detector outputs). ``gt_topic``: mono8 labels for metrics. ``threshold`` / ``min_area`` /
    ``overlay_alpha`` / ``threads``: as the node's parameters (threshold None: the model's
    calibrated one; threads 0: all cores). ``min_pred_area`` / ``min_gt_area``: the evaluator's
    component filters. ``depth_topic`` / ``camera_info_topic``: the aligned depth and CameraInfo
    the 3D outputs are written from (default: the bag's only CameraInfo topic and its only Image
    topic with "depth" in its name), with ``max_points`` and ``depth_scale`` as the node's."""

    image_topic: Optional[str] = None
    gt_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    namespace: str = ""
    providers: tuple[str, ...] = ("cpu",)
    threshold: Optional[float] = None
    min_area: int = default("min_obstacle_area")
    overlay_alpha: float = default("overlay_alpha")
    threads: int = 0
    min_pred_area: int = MIN_PRED_AREA
    min_gt_area: int = MIN_GT_AREA
    max_points: int = default("max_obstacle_points")
    depth_scale: float = default("depth_scale")
    regions: str = "model"  # the region-evidence stage: the model file's ("model") or none ("off")

    def settings(self) -> dict:
        """What changes a replay's numbers (a fleet manifest's key): all but the providers."""
        d = asdict(self)
        for k in ("providers", "threads"):
            d.pop(k)
        return d


class _Bar:
    """tqdm progress bar with ETA on stderr when available and wanted; a no-op otherwise."""

    def __init__(self, total: Optional[int], enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="replay", unit="frame", file=sys.stderr, leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open_detector(model: Any, opts: ReplayOptions) -> Any:
    from flowclas_ros.deploy.open_model import open_detector

    return open_detector(model, providers=list(opts.providers), threshold=opts.threshold,
                         min_area=opts.min_area, threads=opts.threads, regions=opts.regions)


def _run(src: Any, topics: ReplayTopics, scorer: FrameScorer, output: Any,
         progress: bool, depth_scale: float) -> float:
    """One pass over the bag: frames scored, inputs copied and outputs written; wall seconds.
    The output is closed whatever happens (a valid partial bag on Ctrl-C)."""
    from flowclas_ros.data.pool import frames_done
    from flowclas_ros.data.rosbag import BagFrameError, deserialize
    from flowclas_ros.eval.replay_depth import ReplayDepth
    from flowclas_ros.runtime.pipeline import stamp_ns

    t_start = time.perf_counter()
    bar = _Bar(src.expected.get(topics.image), progress)
    extra = set(topics.extra)
    depth = (ReplayDepth(depth_scale) if scorer.det.depth_regions is not None
             and topics.depth is not None and topics.camera_info is not None else None)
    held: Optional[tuple[str, Any, int]] = None  # an image waiting for its depth

    def process(item: tuple[str, Any, int]) -> None:
        msgtype, msg, t = item
        if (res := scorer.frame(msgtype, msg, t, depth)) is not None:
            output.frame(t, stamp_ns(msg), msg.header, res.detection, res.overlay)

    try:
        for message in src.messages(topics.read):
            t, topic = message.log_time_ns, message.topic
            if topic not in extra and topic != topics.gt:  # a camera frame
                bar.update()
                frames_done()
            try:
                msg = deserialize(message)
            except BagFrameError as exc:  # counted where its kind is reported, then skipped
                if topic in extra:
                    kind = "depth" if topic == topics.depth else "camera_info"
                    if output.obstacles is not None:  # (a scoring-only run reads depth for the stage)
                        output.obstacles.problems[f"{kind}_{exc.kind}"] += 1
                elif topic == topics.gt:
                    scorer.gt_skipped[exc.kind] += 1
                else:
                    scorer.skipped[exc.kind] += 1
                continue
            output.copy(topic, t, message.raw)
            if topic in extra:  # depth and CameraInfo: copied, then used
                output.extra(topic, msg)
                if depth is not None:
                    (depth.add_depth if topic == topics.depth else depth.add_info)(msg)
                    if held is not None and depth.ready(stamp_ns(held[1])):
                        process(held)
                        held = None
            elif topic == topics.gt:
                scorer.label(msg)
            elif depth is None:
                process((message.msgtype, msg, t))
            else:  # the stage runs: a frame waits for its depth until the next frame comes
                if held is not None:
                    process(held)
                held = (message.msgtype, msg, t)
                if depth.ready(stamp_ns(msg)):
                    process(held)
                    held = None
        if held is not None:
            process(held)
    except KeyboardInterrupt:
        if output.path is not None:
            log.warning("interrupted after %d frames; %s holds them and is a valid bag",
                        len(scorer.rows), output.path)
        raise
    finally:
        bar.close()
        output.close()  # the partial bag stays valid on Ctrl-C or any error
    return time.perf_counter() - t_start


def _lost(src: Any, topics: ReplayTopics, scorer: FrameScorer) -> None:
    """Messages the bag could not deliver, counted with the frames skipped."""
    lost = src.lost(topics.image)
    if lost:
        scorer.skipped[src.loss_reason or "unreadable"] += lost
    if topics.gt is not None and src.lost(topics.gt):
        scorer.gt_skipped[src.loss_reason or "unreadable"] += src.lost(topics.gt)


def replay(bag: str | os.PathLike, out: str | os.PathLike,
           model: Optional[str | os.PathLike] = None, *,
           report: Optional[str | os.PathLike] = None, force: bool = False,
           progress: bool = True, **options: Any) -> dict:
    """Replay ``bag`` through the detector into the output bag ``out``; returns a summary dict.

    ``options``: the fields of :class:`ReplayOptions`. ``report``: a report directory. With
    3D topics the key ``obstacles3d`` says how many frames got 3D outputs and why others did not.
    Keys always present: ``frames`` (frames processed), ``skipped`` (reason -> frames not
    processed), ``ms_per_frame`` (median decode + pipeline), ``fps``, ``per_frame``,
    ``output_topics``, ``corrupt_chunks`` (MCAP chunks whose CRC or size did not match: skipped,
    their frames counted in ``skipped``); with ``gt_topic`` also the evaluator's metrics,
    ``scored_frames``, ``unmatched_frames``, ``gt_skipped`` and ``worst_frames``.
    """
    from flowclas_ros.data.rosbag import Bag

    opts = ReplayOptions(**options)
    src = Bag(bag)
    outs = output_topics(opts.namespace)
    topics = select_topics(src, outs, opts.image_topic, opts.gt_topic, opts.depth_topic,
                           opts.camera_info_topic)
    out_path = prepare_output(Path(out), src.path, force)
    det = _open_detector(model, opts)
    stamps = label_stamps(src, topics.gt)

    with contextlib.ExitStack() as stack:
        ev = None
        rgb_dir: Optional[Path] = None
        if topics.gt is not None:
            from flowclas_ros.eval.evaluate import Evaluation

            ev = stack.enter_context(Evaluation(det, opts.min_pred_area, opts.min_gt_area))
            if report is not None:  # frames of the montages: read back after the run
                rgb_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="flowclas_replay_")))
        scorer = FrameScorer(det, opts.overlay_alpha, True, stamps, ev, rgb_dir)
        output = OutputBag(out_path, src.topics, topics, outs, output_topics_3d(opts.namespace),
                           opts.max_points, opts.depth_scale)
        wall = _run(src, topics, scorer, output, progress, opts.depth_scale)
        _lost(src, topics, scorer)
        result = _summary(src, out_path, topics, outs, det, scorer, wall, opts.min_area)
        result["obstacles3d"] = None
        if output.obstacles is not None:
            o3d = output.obstacles
            result["obstacles3d"] = {"depth_topic": topics.depth,
                                     "camera_info_topic": topics.camera_info,
                                     "output_topics": output_topics_3d(opts.namespace),
                                     "max_points": opts.max_points, **o3d.finish()}
            if result["obstacles3d"]["problems"]:
                result["warnings"].append(
                    f"{len(scorer.rows) - o3d.written} frames without 3D outputs; problems: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(o3d.problems.items())))
        if ev is not None:
            _gt_summary(result, scorer, topics)
            if len(ev):
                metrics = ev.finish(f"{src.path} {topics.image} (ground truth {topics.gt})",
                                    "rosbag2", progress)
                merge_metrics(result, metrics, ev.per_frame, scorer.scored_rows)
        if report is not None:
            result["report"] = str(report)
            write_report(Path(report), result, ev if ev is not None and len(ev) else None,
                         rgb_dir)
        return result


def score_bag(bag: str | os.PathLike, detector: Any, opts: ReplayOptions,
              out: Optional[str | os.PathLike] = None, force: bool = False,
              progress: bool = False) -> tuple[dict, Any]:
    """One bag of a fleet run: (summary, PooledStats or None). The summary holds the replay's
    keys (``per_frame`` rows carry the frame's scores at the model threshold) and, with a
    ground-truth topic, the bag's own metrics; the statistics pool exactly with other bags'.
    ``out``: also write the output bag (3D outputs included)."""
    from flowclas_ros.data.rosbag import Bag
    from flowclas_ros.eval.pooled_stats import PooledStats, model_meta

    src = Bag(bag)
    outs = output_topics(opts.namespace)
    topics = select_topics(src, outs, opts.image_topic, opts.gt_topic, opts.depth_topic,
                           opts.camera_info_topic,  # depth: for the 3D outputs or the depth stage
                           with_3d=out is not None or detector.depth_regions is not None)
    output: Any = NoOutput()
    if out is not None:
        output = OutputBag(prepare_output(Path(out), src.path, force), src.topics, topics, outs,
                           output_topics_3d(opts.namespace), opts.max_points, opts.depth_scale)
    stats = (PooledStats(detector.threshold, opts.min_pred_area, opts.min_gt_area,
                         components=True) if topics.gt is not None else None)
    try:
        scorer = FrameScorer(detector, opts.overlay_alpha, output.overlay,
                             label_stamps(src, topics.gt), stats)
    except BaseException:
        output.close()
        raise
    wall = _run(src, topics, scorer, output, progress, opts.depth_scale)
    _lost(src, topics, scorer)
    result = _summary(src, output.path, topics, outs, detector, scorer, wall, opts.min_area)
    if output.obstacles is not None:
        result["obstacles3d"] = output.obstacles.finish()
    if stats is not None:
        _gt_summary(result, scorer, topics)
        if len(stats):
            metrics = stats.result(model_meta(detector), f"{src.path} {topics.image}",
                                   "rosbag2")
            result["metrics"] = {k: metrics[k] for k in (
                "auprc", "fpr95", "auroc", "best_f1", "mean_f1", "siou", "ppv",
                "at_model_threshold", "recall_by_size", "pixels", "status")}
            result["warnings"] = metrics["warnings"] + result["warnings"]
    return result, stats


def _gt_summary(result: dict, scorer: FrameScorer, topics: ReplayTopics) -> None:
    result["unmatched_frames"] = len(scorer.rows) - len(scorer.scored_rows)
    result["gt_without_frame"] = len(scorer.pending_label)
    result["scored_frames"] = len(scorer.scored_rows)
    if not scorer.scored_rows:
        result["warnings"].append(f"no frame of {topics.image} has a {topics.gt} label with the "
                                  "same header stamp: no metrics")


def _summary(src: Any, out: Optional[Path], topics: ReplayTopics, outs: dict, det: Any,
             scorer: FrameScorer, wall: float, min_area: int) -> dict:
    import numpy as np

    rows, skipped, gt_skipped = scorer.rows, scorer.skipped, scorer.gt_skipped
    pipeline_ms = scorer.pipeline_ms
    warnings = []
    if src.corrupt_chunks:
        warnings.append(f"{src.corrupt_chunks} corrupt chunks in the bag (CRC, size or record "
                        "mismatch): their messages were not used")
    if skipped:
        warnings.append(f"{sum(skipped.values())} frames skipped: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    if gt_skipped:
        warnings.append(f"{sum(gt_skipped.values())} ground-truth messages unusable: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(gt_skipped.items())))
    first = rows[0]["stamp_ns"] if rows else 0
    for r in rows:
        r["t_s"] = (r["stamp_ns"] - first) / 1e9
    return {
        "bag": str(src.path), "out": str(out) if out is not None else None,
        "image_topic": topics.image, "gt_topic": topics.gt,
        "output_topics": outs,
        "frames": len(rows), "skipped": dict(skipped), "skipped_frames": sum(skipped.values()),
        "gt_skipped": dict(gt_skipped), "corrupt_chunks": src.corrupt_chunks,
        "ms_per_frame": float(statistics.median(pipeline_ms)) if pipeline_ms else float("nan"),
        "ms_per_frame_p95": float(np.percentile(pipeline_ms, 95)) if pipeline_ms else float("nan"),
        "fps": len(rows) / wall if wall > 0 else float("nan"), "wall_s": wall,
        "model": str(det.model_path), "model_version": det.info.model_version,
        "providers": list(det.providers), "threshold": det.threshold, "min_area": min_area,
        "scene": scene_summary([r["flagged_share"] for r in rows]),
        "per_frame": rows, "notes": list(src.notes), "warnings": warnings,
        "depth_stage": dict(sorted(scorer.depth_stage.items())),
    }


