"""Pairs processed colour frames with their depth frames by header stamp, blocking neither side.

Why: a stock RGB-D driver publishes colour and depth as separate topics, and over DDS the depth
(the larger message: 1.2 MB per 640x480 32FC1 frame) often arrives well after its colour frame,
sometimes after the detector has already run on it. Waiting for it in the inference thread
costs heatmaps; giving up after a short wait costs point clouds. So, as message_filters'
synchronizers do, both streams are buffered by stamp: a processed frame (its mask and heatmap)
waits up to `wait_s` for its depth, a depth frame waits in a bounded cache for its colour frame,
and a pair is handed out the moment both are there. Exact matching (tolerance 0) pairs equal
stamps, as aligned depth carries the colour stamp; approximate matching pairs the nearest stamp
within the tolerance.

Every processed frame ends in exactly one bucket, so the counts add up: `matched` (paired) or
`unmatched` (its depth never came within `wait_s`, or it was pushed out of a full buffer). Depth
frames that came for a frame already given up are counted `late` (useful for choosing `wait_s`),
those no colour frame ever claimed `unused` (e.g. colour frames the node dropped). Both
buffers are bounded in count and in bytes: a burst of huge frames cannot exhaust memory.

Plain Python (no rclpy), so the node's synchronisation is unit-testable on its own; not
thread-safe by itself: the node holds one lock around every call.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, TypeVar

F = TypeVar("F")  # a processed frame (whatever the caller keeps: mask, heatmap, header)
D = TypeVar("D")  # a depth frame (the message)

LATE_MEMORY = 256  # stamps of given-up frames and used depth remembered (late / duplicate depth)


@dataclass
class _Pending(Generic[F]):
    item: F
    deadline: float
    nbytes: int


@dataclass
class SyncCounts:
    matched: int = 0
    unmatched: int = 0  # processed frames given up without their depth
    late: int = 0  # depth frames that came after their colour frame was given up
    unused: int = 0  # depth frames pushed out of the cache unmatched (no colour frame came for them)


@dataclass
class StampSync(Generic[F, D]):
    """Buffers of processed frames and depth frames keyed by stamp (ns).

    `add_frame` / `add_depth` return the pairs they complete; `expire` gives up frames past their
    deadline. `clock` is injectable for tests."""

    tolerance_ns: int = 0
    wait_s: float = 0.5
    max_frames: int = 15
    max_depth: int = 30
    max_frame_bytes: int = 256 << 20
    max_depth_bytes: int = 256 << 20
    size_of: Callable[[object], int] = lambda _item: 0
    clock: Callable[[], float] = time.monotonic
    counts: SyncCounts = field(default_factory=SyncCounts)

    def __post_init__(self) -> None:
        self._frames: OrderedDict[int, _Pending[F]] = OrderedDict()
        self._depth: OrderedDict[int, tuple[D, int]] = OrderedDict()
        self._given_up: deque[int] = deque(maxlen=LATE_MEMORY)
        self._paired: deque[int] = deque(maxlen=LATE_MEMORY)  # depth stamps already used
        self._frame_bytes = 0
        self._depth_bytes = 0

    # -- state ----------------------------------------------------------------------------
    @property
    def pending_frames(self) -> int:
        return len(self._frames)

    @property
    def cached_depth(self) -> int:
        return len(self._depth)

    def next_deadline(self) -> Optional[float]:
        """When the oldest waiting frame is given up (None: nothing waits)."""
        return min((p.deadline for p in self._frames.values()), default=None)

    # -- input ----------------------------------------------------------------------------
    def add_frame(self, stamp: int, item: F) -> list[tuple[int, F, D]]:
        """A processed frame; paired at once when its depth is cached, else it waits."""
        depth_stamp = self._nearest(self._depth, stamp)
        if depth_stamp is not None:
            depth, nbytes = self._depth.pop(depth_stamp)
            self._depth_bytes -= nbytes
            self._paired.append(depth_stamp)
            self.counts.matched += 1
            return [(stamp, item, depth)]
        if stamp in self._frames:  # the same stamp processed again: the newer result replaces it
            self._drop_frame(stamp)
        nbytes = self.size_of(item)
        self._frames[stamp] = _Pending(item, self.clock() + self.wait_s, nbytes)
        self._frame_bytes += nbytes
        while self._frames and (len(self._frames) > self.max_frames or self._frame_bytes > self.max_frame_bytes):
            self._give_up(next(iter(self._frames)))
        return []

    def add_depth(self, stamp: int, depth: D) -> list[tuple[int, F, D]]:
        """A depth frame; pairs the waiting frame of its stamp, else it is cached."""
        frame_stamp = self._nearest(self._frames, stamp)
        if frame_stamp is not None:
            pending = self._frames.pop(frame_stamp)
            self._frame_bytes -= pending.nbytes
            self._paired.append(stamp)
            self.counts.matched += 1
            return [(frame_stamp, pending.item, depth)]
        if stamp in self._paired:  # the same frame via a second subscription, already used
            return []
        if stamp in self._given_up:
            self.counts.late += 1
            return []
        if stamp in self._depth:  # the same frame via a second subscription: kept once
            return []
        nbytes = self.size_of(depth)
        self._depth[stamp] = (depth, nbytes)
        self._depth_bytes += nbytes
        while self._depth and (len(self._depth) > self.max_depth or self._depth_bytes > self.max_depth_bytes):
            _, (_, old_bytes) = self._depth.popitem(last=False)
            self._depth_bytes -= old_bytes
            self.counts.unused += 1
        return []

    def peek_depth(self, stamp: int) -> Optional[D]:
        """The cached depth frame that `add_frame(stamp, ...)` would pair, left in the cache (a
        stage that runs before the frame is processed reads it; the pairing still uses it)."""
        depth_stamp = self._nearest(self._depth, stamp)
        return None if depth_stamp is None else self._depth[depth_stamp][0]

    def expire(self) -> list[tuple[int, F]]:
        """Frames whose depth did not come within `wait_s`: removed, counted `unmatched`."""
        now = self.clock()
        due = [stamp for stamp, p in self._frames.items() if p.deadline <= now]
        out = [(stamp, self._frames[stamp].item) for stamp in due]
        for stamp in due:
            self._give_up(stamp)
        return out

    def clear(self) -> None:
        self._frames.clear()
        self._depth.clear()
        self._frame_bytes = self._depth_bytes = 0

    # -- internals ------------------------------------------------------------------------
    def _nearest(self, table: OrderedDict, stamp: int) -> Optional[int]:
        if stamp in table:
            return stamp
        if not self.tolerance_ns or not table:
            return None
        near = min(table, key=lambda t: abs(t - stamp))
        return near if abs(near - stamp) <= self.tolerance_ns else None

    def _drop_frame(self, stamp: int) -> None:
        self._frame_bytes -= self._frames.pop(stamp).nbytes

    def _give_up(self, stamp: int) -> None:
        self._drop_frame(stamp)
        self._given_up.append(stamp)
        self.counts.unmatched += 1
