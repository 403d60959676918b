"""Replay, writing: the output bag, as the node would have published it.

Output bag (rosbag2, MCAP storage), for ``ros2 bag play`` + RViz or Foxglove:

* the input image topic, copied verbatim (and the ground-truth topic when given);
* ``<namespace>/flowclas_detector/anomaly_heatmap`` (32FC1), ``.../obstacle_mask`` (mono8 0/255)
  and ``.../overlay`` (bgr8): the node's own output names;
* when the bag has an aligned depth topic and CameraInfo: both copied, and
  ``.../obstacle_points`` (PointCloud2) and ``.../obstacles`` (MarkerArray) from the runtime's
  ``obstacles3d.frame_obstacles``, the function the node publishes them with.

Each output message carries the input's header (stamp AND frame_id) and is written at the input
message's bag time. :class:`OutputBag` is closed in a ``finally`` by its caller: an interrupted
run leaves a valid bag holding the frames done so far. :class:`NoOutput` stands in when no
output bag is asked for (a fleet run that only scores).
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.replay_input import ReplayTopics
from flowclas_ros.runtime.node_interface import OUTPUTS

__all__ = ["NoOutput", "Obstacles3D", "OutputBag", "prepare_output"]


def prepare_output(out: Path, bag: Path, force: bool) -> Path:
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


class Obstacles3D:
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


class NoOutput:
    """Nothing written: the interface of :class:`OutputBag` for a replay that only scores."""

    path: Optional[Path] = None
    obstacles: Optional[Obstacles3D] = None
    overlay = False  # no overlay to render

    def copy(self, topic: str, t: int, raw: bytes) -> None:
        pass

    def extra(self, topic: str, msg: Any) -> None:
        pass

    def frame(self, t: int, stamp: int, header: Any, detection: Any, overlay: Any) -> None:
        pass

    def close(self) -> None:
        pass


class OutputBag(NoOutput):
    """The output bag of one replay: input topics copied, the node's outputs per frame."""

    overlay = True

    def __init__(self, path: Path, src_topics: dict[str, str], topics: ReplayTopics,
                 outputs: dict[str, str], outputs_3d: dict[str, str], max_points: int,
                 depth_scale: float) -> None:
        from flowclas_ros.data.rosbag import IMAGE, chunk_crc_writer, typestore

        self.path, self.topics = path, topics
        self.ts = typestore()
        self.writer = chunk_crc_writer(path)
        self.writer.open()
        try:
            self.conn = {t: self.writer.add_connection(t, src_topics[t] if t != topics.gt else IMAGE,
                                                       typestore=self.ts)
                         for t in (topics.image, topics.gt) if t is not None}
            self.conn_out = {k: self.writer.add_connection(t, IMAGE, typestore=self.ts)
                             for k, t in outputs.items()}
            self.conn.update({t: self.writer.add_connection(t, src_topics[t], typestore=self.ts)
                              for t in topics.extra})
            self.obstacles = (Obstacles3D(self.writer, outputs_3d, max_points, depth_scale)
                              if topics.depth is not None else None)
        except BaseException:
            self.writer.close()
            raise

    def copy(self, topic: str, t: int, raw: bytes) -> None:
        """A message of an input topic, verbatim."""
        self.writer.write(self.conn[topic], t, raw)

    def extra(self, topic: str, msg: Any) -> None:
        """A depth or CameraInfo message (already copied): feeds the 3D outputs."""
        if self.obstacles is not None:
            (self.obstacles.depth if topic == self.topics.depth else self.obstacles.camera_info)(msg)

    def frame(self, t: int, stamp: int, header: Any, detection: Any, overlay: Any) -> None:
        """The node's outputs of one frame, with the input's header, at its bag time."""
        from flowclas_ros.data.rosbag import IMAGE, image_message

        arrays = {"heatmap": detection.heatmap, "mask": detection.mask, "overlay": overlay}
        for key, _, encoding in OUTPUTS:
            self.writer.write(self.conn_out[key], t, self.ts.serialize_cdr(
                image_message(arrays[key], encoding, header), IMAGE))
        if self.obstacles is not None:
            self.obstacles.frame(t, stamp, header, detection.mask, detection.heatmap)

    def close(self) -> None:
        self.writer.close()
