"""`flowclas-ros replay`: a recorded bag through the node's frame pipeline, into an output bag.

Every frame of the image topic (sensor_msgs/Image or CompressedImage) is decoded and run exactly
as the node does it (`runtime.pipeline`: `decode_image_fields` / `decode_compressed_frame`, then
`run_frame` with the node's defaults: model threshold, min obstacle area 50, overlay alpha 0.45),
so a frame gives the same heatmap here as on the robot. No ROS install is needed (`rosbags`).

Output bag (rosbag2, MCAP storage), for ``ros2 bag play`` + RViz or Foxglove:

* the input image topic, copied verbatim (and the ground-truth topic when given);
* ``<namespace>/flowclas_detector/anomaly_heatmap`` (32FC1), ``.../obstacle_mask`` (mono8 0/255)
  and ``.../overlay`` (bgr8): the node's own output names (namespace "" by default, as when the
  node is launched without one, so ``config/detector.rviz`` shows them unchanged);
* when the bag has an aligned depth topic and CameraInfo (as ``sim --bag`` writes them): both
  copied, and ``.../obstacle_points`` (PointCloud2) and ``.../obstacles`` (MarkerArray) from the
  runtime's ``obstacles3d.frame_obstacles``, the function the node publishes them with.

Each output message carries the input's header (stamp AND frame_id) and is written at the input
message's bag time. The output is written as frames are processed and closed in a ``finally``:
an interrupted run (Ctrl-C) leaves a valid bag holding the frames done so far.

With a ground-truth topic (mono8 labels 0 inlier / 1 anomaly / 255 void, matched to frames by
header stamp), the (heatmap, label) pairs go through the evaluator's own machinery
(:class:`flowclas_ros.eval.evaluate.Evaluation`): the same metrics, per-frame scores and report files
as ``flowclas-ros evaluate`` on the same frames. Frames without a label are counted, not scored.

The summary text, frames.csv, the over-time plot and the merge of the evaluator's metrics into
the summary are :mod:`flowclas_ros.eval.replay_report`'s job.

Damaged input: unreadable parts of a bag are skipped (see :mod:`flowclas_ros.data.rosbag`), and
frames that cannot be decoded are skipped; both are counted per reason in ``skipped``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.replay_report import merge_metrics, write_report
from flowclas_ros.runtime.node_interface import OUTPUTS, default, output_topics, output_topics_3d
from flowclas_ros.runtime.scene_alarm import flagged_share, scene_summary

# numpy, rosbags, onnxruntime and matplotlib are imported inside the functions: the `flowclas-ros`
# parser stays fast, and the verb's own import errors name the missing extra.

__all__ = ["replay"]

log = logging.getLogger(__name__)



def _prepare_output(out: Path, bag: Path, force: bool) -> Path:
    """Refuse to clobber: an existing output needs ``force``, and even then only a bag directory
    is deleted (never the input, nor a directory holding anything but bag files)."""
    from flowclas_ros.data.rosbag import BagError

    r_out, r_bag = out.resolve(), bag.resolve()
    if r_out == r_bag or r_bag in r_out.parents or r_out in r_bag.parents:
        raise BagError(f"output bag {out} must not be the input bag {bag}, inside it, or hold it")
    if out.exists() or out.is_symlink():
        if not force:
            raise BagError(f"output bag {out} exists; pass --force to overwrite it")
        if not out.is_dir() or out.is_symlink():
            raise BagError(f"--force only replaces a bag directory, and {out} is not one; "
                           "remove it yourself")
        bag_files = [p for p in out.iterdir() if p.is_file()
                     and (p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3"))]
        other = [p.name for p in out.iterdir() if p not in bag_files]
        if other:
            raise BagError(f"--force only replaces a bag directory, and {out} also holds "
                           f"{', '.join(sorted(other)[:5])}; remove it yourself")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _decode_label(msg: Any) -> Any:
    """A ground-truth Image -> HxW uint8 0/1/255 (BagFrameError / ImageError / DatasetError)."""
    from flowclas_ros.data.labels import LABEL_DECODERS
    from flowclas_ros.data.rosbag import BagFrameError
    from flowclas_ros.runtime.images import image_from_fields

    if msg.encoding not in ("mono8", "8UC1"):
        raise BagFrameError("gt_encoding", f"ground truth must be mono8 (0/1/255), got {msg.encoding}")
    raw = image_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                            bool(msg.is_bigendian))
    return LABEL_DECODERS["generic"](raw.copy(), f"at stamp {msg.header.stamp.sec}."
                                     f"{msg.header.stamp.nanosec:09d}")


class _Obstacles3D:
    """The node's 3D outputs for a replayed bag: colour frames, depth frames and CameraInfo come
    in bag order, in any order for one stamp; a frame's points and boxes are written once its
    depth (same header stamp) and a CameraInfo are there. Waiting frames and depths are bounded
    (:data:`PENDING`); a frame whose depth never comes is counted ``depth_unmatched``."""

    PENDING = 64

    def __init__(self, writer: Any, topics: dict[str, str], max_points: int, depth_scale: float) -> None:
        from flowclas_ros.data.rosbag import MARKER_ARRAY, POINT_CLOUD2, typestore

        self.writer, self.ts = writer, typestore()
        self.conn = {"points": writer.add_connection(topics["points"], POINT_CLOUD2, typestore=self.ts),
                     "markers": writer.add_connection(topics["markers"], MARKER_ARRAY, typestore=self.ts)}
        self.max_points, self.depth_scale = max_points, depth_scale
        self.intrinsics: Any = None
        self.frames: dict[int, dict] = {}  # stamp -> {t, header, mask, heat, depth}
        self.depths: dict[int, Any] = {}  # stamp -> depth (m) that came before its frame
        self.written = 0
        self.problems: Counter[str] = Counter()

    def camera_info(self, msg: Any) -> None:
        from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, DepthError

        try:
            self.intrinsics = CameraIntrinsics.from_k(msg.k, msg.width, msg.height)
        except DepthError as exc:
            self.problems[exc.kind] += 1
            return
        for stamp in [s for s, f in self.frames.items() if f["depth"] is not None]:
            self._emit(stamp)

    def depth(self, msg: Any) -> None:
        from flowclas_ros.runtime.images import ImageError
        from flowclas_ros.runtime.obstacles3d import DepthError, depth_from_fields
        from flowclas_ros.runtime.pipeline import stamp_ns

        try:
            depth_m = depth_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                        bool(msg.is_bigendian), self.depth_scale)
        except DepthError as exc:
            self.problems[exc.kind] += 1
            return
        except ImageError as exc:
            self.problems[f"depth_{exc.kind}"] += 1
            return
        stamp = stamp_ns(msg)
        if stamp in self.frames:
            self.frames[stamp]["depth"] = depth_m
            self._emit(stamp)
        else:
            self.depths[stamp] = depth_m
            if len(self.depths) > self.PENDING:
                self.depths.pop(next(iter(self.depths)))

    def frame(self, t: int, stamp: int, header: Any, mask: Any, heat: Any) -> None:
        self.frames[stamp] = {"t": t, "header": header, "mask": mask, "heat": heat,
                              "depth": self.depths.pop(stamp, None)}
        if self.frames[stamp]["depth"] is not None:
            self._emit(stamp)
        if len(self.frames) > self.PENDING:
            self.frames.pop(next(iter(self.frames)))
            self.problems["depth_unmatched"] += 1

    def _emit(self, stamp: int) -> None:
        from flowclas_ros.data.rosbag import MARKER_ARRAY, POINT_CLOUD2, cloud_message, marker_array_message
        from flowclas_ros.runtime.obstacles3d import DepthError, frame_obstacles

        if self.intrinsics is None:
            return  # written when a CameraInfo comes
        f = self.frames.pop(stamp)
        try:
            points, markers = frame_obstacles(f["mask"], f["heat"], f["depth"], self.intrinsics,
                                              self.max_points)
        except DepthError as exc:
            self.problems[exc.kind] += 1
            return
        self.writer.write(self.conn["points"], f["t"],
                          self.ts.serialize_cdr(cloud_message(points, f["header"]), POINT_CLOUD2))
        self.writer.write(self.conn["markers"], f["t"],
                          self.ts.serialize_cdr(marker_array_message(markers, f["header"]), MARKER_ARRAY))
        self.written += 1

    def finish(self) -> dict:
        waiting = len(self.frames)
        if waiting:
            self.problems["no_camera_info" if self.intrinsics is None and any(
                f["depth"] is not None for f in self.frames.values()) else "depth_unmatched"] += waiting
        return {"frames_with_3d": self.written, "problems": dict(self.problems)}


def _depth_topics(src: Any, depth_topic: Optional[str], camera_info_topic: Optional[str],
                  exclude: set) -> tuple[Optional[str], Optional[str]]:
    """(depth topic, CameraInfo topic) to replay the 3D outputs from, or (None, None): given ones
    are checked; otherwise the bag's only CameraInfo topic and its only Image topic with "depth"
    in its name. Naming one of them and not finding the other is an error."""
    from flowclas_ros.data.rosbag import CAMERA_INFO, IMAGE, BagError

    asked = depth_topic is not None or camera_info_topic is not None
    if depth_topic is not None:
        src.require_topic(depth_topic, types=(IMAGE,), what="depth topic")
    if camera_info_topic is not None:
        src.require_topic(camera_info_topic, types=(CAMERA_INFO,), what="CameraInfo topic")
    if depth_topic is None:
        found = [t for t, ty in src.topics.items() if ty == IMAGE and "depth" in t and t not in exclude]
        depth_topic = found[0] if len(found) == 1 else None
    if camera_info_topic is None:
        found = [t for t, ty in src.topics.items() if ty == CAMERA_INFO]
        camera_info_topic = found[0] if len(found) == 1 else None
    if depth_topic is not None and camera_info_topic is not None:
        return depth_topic, camera_info_topic
    if asked:
        raise BagError(f"3D outputs need a depth topic and a CameraInfo topic; found "
                       f"{depth_topic or 'no depth topic'} and {camera_info_topic or 'no CameraInfo'}; "
                       f"name both with --depth-topic / --camera-info-topic. Topics: {src.describe_topics()}")
    return None, None  # a bag without depth: no 3D outputs


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


def replay(bag: str | os.PathLike, out: str | os.PathLike,
           model: Optional[str | os.PathLike] = None, image_topic: Optional[str] = None,
           gt_topic: Optional[str] = None,
           report: Optional[str | os.PathLike] = None, force: bool = False,
           providers: Sequence[str] = ("cpu",), progress: bool = True, namespace: str = "",
           threshold: Optional[float] = None, min_area: int = default("min_obstacle_area"),
           overlay_alpha: float = default("overlay_alpha"),
           threads: int = 0, min_pred_area: int = MIN_PRED_AREA, min_gt_area: int = MIN_GT_AREA,
           depth_topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
           max_points: int = default("max_obstacle_points"),
           depth_scale: float = default("depth_scale"), regions: str = "model") -> dict:
    """Replay ``bag`` through the detector into the output bag ``out``; returns a summary dict.

    ``image_topic``: default the bag's only image topic (other than ``gt_topic`` and detector
    outputs). ``gt_topic``: mono8 labels for metrics (the evaluator's keys). ``report``: a
    report directory. ``threshold`` / ``min_area`` / ``overlay_alpha``: as the node's parameters
    (None: the model's calibrated threshold). ``min_pred_area`` / ``min_gt_area``: the
    evaluator's component filters. ``depth_topic`` / ``camera_info_topic``: the aligned depth and
    CameraInfo the node's 3D outputs (``obstacle_points``, ``obstacles``) are written from (by
    default the bag's only CameraInfo topic and its only Image topic with "depth" in its name;
    none: no 3D outputs), matched by header stamp, with ``max_points`` and ``depth_scale`` as the
    node's parameters; the key ``obstacles3d`` then says how many frames got them and why
    others did not. ``regions``: the region-evidence stage, "model" (the one the model file
    carries, as the node runs it) or "off". Keys always present: ``frames`` (frames processed),
    ``skipped`` (reason -> frames not processed), ``ms_per_frame`` (median decode + pipeline),
    ``fps``, ``per_frame``, ``output_topics``, ``corrupt_chunks`` (MCAP chunks whose CRC or size
    did not match: skipped, their frames counted in ``skipped``); with ``gt_topic`` also the evaluator's metrics,
    ``scored_frames``, ``unmatched_frames``, ``gt_skipped`` and ``worst_frames``.
    """
    import numpy as np

    from flowclas_ros.data.files import DatasetError
    from flowclas_ros.data.rosbag import (
        IMAGE,
        Bag,
        BagError,
        BagFrameError,
        chunk_crc_writer,
        decode_frame,
        deserialize,
        image_message,
        typestore,
    )
    from flowclas_ros.deploy.open_model import open_detector
    from flowclas_ros.runtime.images import ImageError
    from flowclas_ros.runtime.pipeline import run_frame, stamp_ns

    src = Bag(bag)
    outs = output_topics(namespace)
    if gt_topic is not None:
        src.require_topic(gt_topic, types=(IMAGE,), what="ground-truth topic")
    outs3d = output_topics_3d(namespace)
    depth_topic, info_topic = _depth_topics(src, depth_topic, camera_info_topic,
                                            exclude={gt_topic, image_topic, *outs.values()})
    topic = src.pick_image_topic(image_topic, exclude={gt_topic, depth_topic, *outs.values()},
                                 how_to_choose="choose one with --image-topic")
    if topic == gt_topic:
        raise BagError(f"the image topic and the ground-truth topic are both {topic}")
    if depth_topic is not None and topic == depth_topic:
        raise BagError(f"the image topic and the depth topic are both {topic}")
    if set(outs.values()) & {topic, gt_topic}:
        raise BagError(f"{topic} is a detector output topic; replay its input topic instead")
    out_path = _prepare_output(Path(out), src.path, force)
    det = open_detector(model, providers=providers, threshold=threshold, min_area=min_area,
                        threads=threads, regions=regions)
    ts = typestore()

    gt_stamps: set[int] = set()
    if gt_topic is not None:  # which frames will have a label: only their heatmaps are held
        for m in src.messages([gt_topic]):
            with contextlib.suppress(BagFrameError):
                gt_stamps.add(stamp_ns(deserialize(m)))

    skipped: Counter[str] = Counter()
    gt_skipped: Counter[str] = Counter()
    rows: list[dict] = []
    pipeline_ms: list[float] = []
    pending_heat: dict[int, tuple[int, Any, float, Any]] = {}  # stamp -> (row, heat, ms, rgb)
    pending_label: dict[int, Any] = {}  # stamp -> label that came before its frame
    scored_rows: list[int] = []  # row index of each frame fed to the evaluation, in order
    interrupted = False
    t_start = time.perf_counter()

    with contextlib.ExitStack() as stack:
        ev = None
        rgb_dir: Optional[Path] = None
        if gt_topic is not None:
            from flowclas_ros.eval.evaluate import Evaluation

            ev = stack.enter_context(Evaluation(det, min_pred_area, min_gt_area))
            if report is not None:  # frames of the montages: read back after the run
                rgb_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="flowclas_replay_")))

        def score(row: int, heat: Any, label: Any, ms: float, rgb: Any) -> None:
            if label.shape != heat.shape:
                gt_skipped["shape_mismatch"] += 1
                return
            if rgb_dir is not None:
                np.save(rgb_dir / f"{len(ev):07d}.npy", rgb)
            ev.add(rows[row]["id"], heat, label, ms, rgb)
            scored_rows.append(row)

        writer = chunk_crc_writer(out_path)
        writer.open()
        bar = _Bar(src.expected.get(topic), progress)
        try:
            conn_in = writer.add_connection(topic, src.topics[topic], typestore=ts)
            conn_gt = (writer.add_connection(gt_topic, IMAGE, typestore=ts)
                       if gt_topic is not None else None)
            conn_out = {k: writer.add_connection(t, IMAGE, typestore=ts) for k, t in outs.items()}
            extra = [x for x in (depth_topic, info_topic) if x is not None]
            conn_extra = {x: writer.add_connection(x, src.topics[x], typestore=ts) for x in extra}
            obstacles = (_Obstacles3D(writer, outs3d, max_points, depth_scale)
                         if depth_topic is not None else None)
            for message in src.messages([topic] + ([gt_topic] if gt_topic else []) + extra):
                t = message.log_time_ns
                if message.topic in conn_extra:  # depth and CameraInfo: copied, then used
                    try:
                        msg = deserialize(message)
                    except BagFrameError as exc:
                        obstacles.problems[f"{'depth' if message.topic == depth_topic else 'camera_info'}"
                                           f"_{exc.kind}"] += 1
                        continue
                    writer.write(conn_extra[message.topic], t, message.raw)
                    (obstacles.depth if message.topic == depth_topic else obstacles.camera_info)(msg)
                    continue
                if message.topic == gt_topic:
                    try:
                        msg = deserialize(message)
                        writer.write(conn_gt, t, message.raw)
                        label = _decode_label(msg)
                    except (BagFrameError, ImageError) as exc:
                        gt_skipped[exc.kind] += 1
                        continue
                    except DatasetError:
                        gt_skipped["bad_values"] += 1
                        continue
                    st = stamp_ns(msg)
                    if st in pending_heat:
                        row, heat, det_ms, rgb = pending_heat.pop(st)
                        score(row, heat, label, det_ms, rgb)
                    else:
                        pending_label[st] = label
                    continue
                bar.update()
                try:
                    msg = deserialize(message)
                    writer.write(conn_in, t, message.raw)
                    t0 = time.perf_counter()
                    rgb = decode_frame(message.msgtype, msg)
                    res = run_frame(det, rgb, overlay_alpha)
                    ms = (time.perf_counter() - t0) * 1e3
                except (BagFrameError, ImageError) as exc:
                    skipped[exc.kind] += 1
                    continue
                d = res.detection
                for key, _, encoding in OUTPUTS:
                    array = {"heatmap": d.heatmap, "mask": d.mask, "overlay": res.overlay}[key]
                    writer.write(conn_out[key], t,
                                 ts.serialize_cdr(image_message(array, encoding, msg.header), IMAGE))
                st = stamp_ns(msg)
                if obstacles is not None:
                    obstacles.frame(t, st, msg.header, d.mask, d.heatmap)
                pipeline_ms.append(ms)
                rows.append({"index": len(rows), "id": f"{st // 10**9}.{st % 10**9:09d}",
                             "stamp_ns": st, "log_time_ns": t,
                             "max_score": float(d.heatmap.max()),
                             "obstacles": len(d.obstacles),
                             "obstacle_pixels": int(np.count_nonzero(d.mask)),
                             "flagged_share": flagged_share(d.heatmap, det.threshold), "ms": ms})
                if st in gt_stamps:
                    det_ms = d.timings_ms["total"]
                    if st in pending_label:
                        score(len(rows) - 1, d.heatmap, pending_label.pop(st), det_ms, rgb)
                    else:
                        pending_heat[st] = (len(rows) - 1, d.heatmap, det_ms, rgb)  # rgb: contrast
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            bar.close()
            writer.close()  # the partial bag stays valid on Ctrl-C or any error
            if interrupted:
                log.warning("interrupted after %d frames; %s holds them and is a valid bag",
                            len(rows), out_path)
        wall = time.perf_counter() - t_start

        lost = src.lost(topic)
        if lost:
            skipped[src.loss_reason or "unreadable"] += lost
        if gt_topic is not None and src.lost(gt_topic):
            gt_skipped[src.loss_reason or "unreadable"] += src.lost(gt_topic)
        result = _summary(src, out_path, topic, gt_topic, outs, det, rows, skipped, gt_skipped,
                          pipeline_ms, wall, threshold=det.threshold, min_area=min_area)
        result["obstacles3d"] = None
        if obstacles is not None:
            result["obstacles3d"] = {"depth_topic": depth_topic, "camera_info_topic": info_topic,
                                     "output_topics": outs3d, "max_points": max_points,
                                     **obstacles.finish()}
            if result["obstacles3d"]["problems"]:
                result["warnings"].append(
                    f"{len(rows) - obstacles.written} frames without 3D outputs; problems: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(obstacles.problems.items())))
        if ev is not None:
            result["unmatched_frames"] = len(rows) - len(scored_rows)
            result["gt_without_frame"] = len(pending_label)
            if len(ev):
                metrics = ev.finish(f"{src.path} {topic} (ground truth {gt_topic})", "rosbag2",
                                    progress)
                merge_metrics(result, metrics, ev.per_frame, scored_rows)
            else:
                result["scored_frames"] = 0
                result["warnings"].append(f"no frame of {topic} has a {gt_topic} label with the "
                                          "same header stamp: no metrics")
        if report is not None:
            result["report"] = str(report)
            write_report(Path(report), result, ev if ev is not None and len(ev) else None,
                         rgb_dir)
        return result


def _summary(src: Any, out: Path, topic: str, gt_topic: Optional[str], outs: dict, det: Any,
             rows: list[dict], skipped: Counter, gt_skipped: Counter, pipeline_ms: list[float],
             wall: float, threshold: float, min_area: int) -> dict:
    import numpy as np

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
        "bag": str(src.path), "out": str(out), "image_topic": topic, "gt_topic": gt_topic,
        "output_topics": outs,
        "frames": len(rows), "skipped": dict(skipped), "skipped_frames": sum(skipped.values()),
        "gt_skipped": dict(gt_skipped), "corrupt_chunks": src.corrupt_chunks,
        "ms_per_frame": float(statistics.median(pipeline_ms)) if pipeline_ms else float("nan"),
        "ms_per_frame_p95": float(np.percentile(pipeline_ms, 95)) if pipeline_ms else float("nan"),
        "fps": len(rows) / wall if wall > 0 else float("nan"), "wall_s": wall,
        "model": str(det.model_path), "model_version": det.info.model_version,
        "providers": list(det.providers), "threshold": threshold, "min_area": min_area,
        "scene": scene_summary([r["flagged_share"] for r in rows]),
        "per_frame": rows, "notes": list(src.notes), "warnings": warnings,
    }
