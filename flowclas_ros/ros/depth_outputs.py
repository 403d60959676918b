"""The node's 3D outputs (`use_depth`): processed frames paired with their depth, off the hot path.

Inference does not wait for depth (a model with the depth region stage waits at most
`depth_regions_wait`, in `depth_for`). After a frame's 2D outputs are published, its mask, heatmap and
header are handed to `DepthOutputs.add_frame`; depth frames come in through `add_depth` (executor
thread) and CameraInfo through `add_camera_info`. The stamp synchroniser (runtime/stamp_sync.py)
pairs a frame with its depth whichever comes first; a worker thread of its own turns each pair
into ~/obstacle_points and ~/obstacles as soon as a CameraInfo is there too, so a depth frame that
arrives a few hundred milliseconds after its colour frame still gets its cloud, and a slow
depth stream never costs heatmaps. A frame still without depth (or CameraInfo) `depth_wait`
seconds after it was processed is given up and counted.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from flowclas_ros.ros.edge_guard import EdgeGuard
from flowclas_ros.ros.messages import cloud_msg, marker_array_msg
from flowclas_ros.ros.stats import NodeStats, Throttle
from flowclas_ros.runtime.images import ImageError
from flowclas_ros.runtime.obstacles3d import (
    CameraIntrinsics,
    DepthError,
    depth_and_intrinsics,
    frame_obstacles,
)
from flowclas_ros.runtime.pipeline import stamp_ns
from flowclas_ros.runtime.stamp_sync import StampSync

IDLE_POLL_S = 0.1  # the worker's longest sleep: stop requests and deadlines are seen this fast
MAX_PENDING_BYTES = 256 << 20  # processed frames waiting for depth, all together
MAX_DEPTH_BYTES = 256 << 20  # cached depth frames waiting for their colour frame, all together


@dataclass
class ProcessedFrame:
    """What a processed frame leaves for its 3D outputs."""

    header: Any
    mask: np.ndarray
    heatmap: np.ndarray
    wanted: dict[str, Any]  # output key -> publisher, as subscribed when the frame was processed
    # the depth (metres) and intrinsics the depth region stage already decoded for this frame:
    # its 3D outputs use them instead of decoding the paired depth message again
    depth: Optional[tuple[np.ndarray, CameraIntrinsics]] = None


def _nbytes(item: Any) -> int:
    if isinstance(item, ProcessedFrame):
        return item.mask.nbytes + item.heatmap.nbytes + (item.depth[0].nbytes if item.depth else 0)
    return len(item.data)  # a depth Image


class DepthOutputs:
    """Pairs, builds and publishes the 3D outputs on a thread of its own."""

    def __init__(self, *, tolerance_s: float, wait_s: float, max_frames: int, max_depth: int,
                 depth_scale: float, max_points: int, stats: NodeStats, throttle: Throttle,
                 guard: EdgeGuard, logger: Any, bad_input: Callable[[str, str], None],
                 warn: Callable[[str, str], None], now_ns: Callable[[], int]) -> None:
        self.depth_scale, self.max_points = depth_scale, max_points
        self.stats, self.throttle, self.guard, self.logger = stats, throttle, guard, logger
        self._bad_input, self._warn, self._now_ns = bad_input, warn, now_ns
        self.sync: StampSync[ProcessedFrame, Any] = StampSync(
            tolerance_ns=int(tolerance_s * 1e9), wait_s=wait_s, max_frames=max_frames,
            max_depth=max_depth, max_frame_bytes=MAX_PENDING_BYTES, max_depth_bytes=MAX_DEPTH_BYTES,
            size_of=_nbytes)
        self._info: Optional[Any] = None
        self._ready: list[tuple[int, ProcessedFrame, Any, float]] = []  # paired, waiting for CameraInfo
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="flowclas-3d-outputs", daemon=True)
        self._thread.start()

    # -- settings changed at run time (ros2 param set) -------------------------------------
    def set_tolerance(self, seconds: float) -> None:
        with self._cv:
            self.sync.tolerance_ns = int(seconds * 1e9)

    def set_wait(self, seconds: float) -> None:
        with self._cv:
            self.sync.wait_s = seconds

    # -- inputs (any thread) ---------------------------------------------------------------
    def add_frame(self, frame: ProcessedFrame) -> None:
        with self._cv:
            self._take(self.sync.add_frame(stamp_ns(frame), frame))

    def add_depth(self, msg: Any) -> None:
        with self._cv:
            self._take(self.sync.add_depth(stamp_ns(msg), msg))
            self._cv.notify_all()  # a frame being processed may be waiting for it (depth_for)

    def add_camera_info(self, msg: Any) -> None:
        with self._cv:
            self._info = msg  # intrinsics do not change per frame: the latest is used
            self._cv.notify_all()  # the worker (pairs waiting for it) and depth_for

    def depth_for(self, frame_stamp_ns: int, wait_s: float = 0.0) -> Optional[tuple[Any, Any]]:
        """(depth Image, CameraInfo) for a colour frame about to be processed, waiting at most
        ``wait_s`` for them to arrive, or None (the frame then goes without the depth region
        stage). The depth frame stays cached: the 3D outputs pair it as before."""
        deadline = time.monotonic() + wait_s
        with self._cv:
            while True:
                depth = self.sync.peek_depth(frame_stamp_ns) if self._info is not None else None
                if depth is not None:
                    return depth, self._info
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop:
                    return None
                self._cv.wait(remaining)

    def decode(self, depth: Any, info: Any) -> tuple[np.ndarray, CameraIntrinsics]:
        """A depth Image and CameraInfo -> metres and intrinsics (DepthError / ImageError)."""
        return depth_and_intrinsics(depth, info, self.depth_scale)

    def _counts(self) -> dict[str, int]:
        """The synchroniser's counts and the frames still waiting (lock held)."""
        return {**dataclasses.asdict(self.sync.counts), "pending": self.sync.pending_frames + len(self._ready)}

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5.0)
        with self._cv:
            self.sync.clear()
            self._ready.clear()

    # -- worker ----------------------------------------------------------------------------
    def _take(self, pairs: list) -> None:
        """Pairs just completed (lock held): queued for the worker with their deadline."""
        if pairs:
            deadline = time.monotonic() + self.sync.wait_s
            self._ready.extend((stamp, frame, depth, deadline) for stamp, frame, depth in pairs)
            self._cv.notify_all()  # the worker; a depth_for waiting on the same condition too

    def _run(self) -> None:
        while True:
            work = self.guard.run("3d_outputs.wait", self._next_work)
            if work is None:
                if self._stop:
                    return
                continue
            frame, depth, info = work
            self.guard.run("3d_outputs.publish", self._publish, frame, depth, info)

    def _next_work(self) -> Optional[tuple[ProcessedFrame, Any, Any]]:
        """The next pair with a CameraInfo, waiting at most IDLE_POLL_S; gives up frames past
        their deadline on the way (None: nothing to do now)."""
        with self._cv:
            if self._stop:
                return None
            if not (self._ready and self._info is not None):
                self._cv.wait(IDLE_POLL_S)
            expired = self.sync.expire()
            late_info = 0
            if self._info is None:  # paired, but no CameraInfo came within the frame's wait
                now = time.monotonic()
                kept = [r for r in self._ready if r[3] > now]
                late_info, self._ready = len(self._ready) - len(kept), kept
            cached = self.sync.cached_depth
            work = None
            if self._ready and self._info is not None:
                _, frame, depth, _ = self._ready.pop(0)
                work = (frame, depth, self._info)
            counts = self._counts()
        self.stats.on_depth_counts(counts)
        if expired and self.throttle.allow("depth_unmatched")[0]:
            self.logger.warning(
                f"no depth frame with stamp {expired[-1][0] / 1e9:.6f} within {self.sync.wait_s:g} s "
                f"of its colour frame being processed ({len(expired)} frame(s) now; tolerance "
                f"{self.sync.tolerance_ns / 1e9:g} s, {cached} depth frames cached): no 3D outputs "
                "for them; is the depth topic aligned to the colour camera and remapped?")
        for _ in range(late_info):
            self._warn("no_camera_info", "no CameraInfo received yet: no 3D outputs for a frame "
                       "whose depth came (is camera_info remapped to the colour camera's?)")
        return work

    def _publish(self, frame: ProcessedFrame, depth: Any, info: Any) -> None:
        t0 = time.monotonic()
        try:
            depth_m, intrinsics = frame.depth if frame.depth is not None else self.decode(depth, info)
            wanted = frame.wanted
            points, markers = frame_obstacles(frame.mask, frame.heatmap, depth_m, intrinsics,
                                              self.max_points, points="points" in wanted,
                                              markers="markers" in wanted)
        except DepthError as exc:
            self._bad_input(exc.kind, str(exc))
            return
        except ImageError as exc:
            self._bad_input(f"depth_{exc.kind}", f"depth image: {exc}")
            return
        if points is not None:
            wanted["points"].publish(cloud_msg(points, frame.header))
        if markers is not None:
            wanted["markers"].publish(marker_array_msg(markers, frame.header))
        self.stats.on_obstacles3d((time.monotonic() - t0) * 1e3, (self._now_ns() - stamp_ns(frame)) / 1e6)
