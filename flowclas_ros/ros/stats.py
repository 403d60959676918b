"""Run-time bookkeeping for the node's diagnostics: rates, latency percentiles, counters, and a
per-problem log throttle. Plain Python (no rclpy) so it is unit-testable on its own."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable, Optional

import numpy as np

from flowclas_ros.runtime.scene_alarm import FlaggedShareWindow


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._times: deque[float] = deque()

    def tick(self) -> None:
        self._times.append(self.clock())

    def rate(self) -> float:
        now = self.clock()
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """The last `size` latencies (ms); percentiles on demand."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def percentile(self, q: float) -> Optional[float]:
        return float(np.percentile(np.fromiter(self._values, float), q)) if self._values else None


class Throttle:
    """Allow one event per key per `period_s` (so one bad stream cannot flood the log, and one
    kind of problem cannot hide another)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s, self.clock = period_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def allow(self, key: str) -> tuple[bool, int]:
        """(allowed, how many were suppressed since the last allowed one)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] += 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


class NodeStats:
    """Thread-safe counters and meters shared by the receive callback and the inference thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.input_rate = RateMeter()
        self.processed_rate = RateMeter()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.skipped_no_subscribers = 0
        self.bad_input: Counter[str] = Counter()
        self.flagged = FlaggedShareWindow()  # the domain-shift alarm's input (runtime/scene_alarm.py)
        self.processing_ms = LatencyWindow()  # receipt -> outputs published
        self.stamp_age_ms = LatencyWindow()  # header stamp -> outputs published
        self.depth: dict[str, int] = {}  # the depth synchroniser's counts (runtime/stamp_sync.py)
        self.obstacles3d_ms = LatencyWindow()  # 3D outputs' own work, per frame
        self.obstacles3d_age_ms = LatencyWindow()  # header stamp -> 3D outputs published
        self.depth_stage: Counter[str] = Counter()  # what the depth region stage did, per frame
        self.internal_errors: Counter[str] = Counter()  # by the callback / thread that caught it
        self.last_problem: dict[str, float] = {}  # "bad_input" / "internal_error" -> monotonic time

    def on_received(self, replaced_unprocessed: bool) -> None:
        with self.lock:
            self.received += 1
            self.input_rate.tick()
            if replaced_unprocessed:
                self.dropped += 1

    def on_processed(self, processing_ms: float, age_ms: float, flagged_share: float) -> None:
        with self.lock:
            self.flagged.add(flagged_share)
            self.processed += 1
            self.processed_rate.tick()
            self.processing_ms.add(processing_ms)
            self.stamp_age_ms.add(age_ms)

    def on_obstacles3d(self, work_ms: float, age_ms: float) -> None:
        with self.lock:
            self.obstacles3d_ms.add(work_ms)
            self.obstacles3d_age_ms.add(age_ms)

    def on_depth_counts(self, counts: dict[str, int]) -> None:
        with self.lock:
            self.depth = dict(counts)

    def on_depth_stage(self, what: str) -> None:
        with self.lock:
            self.depth_stage[what] += 1

    def on_bad_input(self, kind: str) -> None:
        with self.lock:
            self.bad_input[kind] += 1
            self.last_problem["bad_input"] = time.monotonic()

    def on_internal_error(self, site: str) -> None:
        with self.lock:
            self.internal_errors[site] += 1
            self.last_problem["internal_error"] = time.monotonic()

    def seconds_since(self, problem: str) -> Optional[float]:
        """Seconds since the last problem of this kind (None: never)."""
        with self.lock:
            last = self.last_problem.get(problem)
        return None if last is None else time.monotonic() - last

    def snapshot(self) -> dict[str, float | int | None | dict]:
        with self.lock:
            return {
                "received": self.received, "processed": self.processed, "dropped": self.dropped,
                "skipped_no_subscribers": self.skipped_no_subscribers,
                "input_rate_hz": self.input_rate.rate(), "processed_rate_hz": self.processed_rate.rate(),
                "processing_ms_p50": self.processing_ms.percentile(50),
                "processing_ms_p95": self.processing_ms.percentile(95),
                "latency_ms_p50": self.stamp_age_ms.percentile(50),
                "latency_ms_p95": self.stamp_age_ms.percentile(95),
                **{f"depth_{k}": v for k, v in self.depth.items()},
                **{f"depth_regions_{k}": v for k, v in sorted(self.depth_stage.items())},
                "obstacles3d_ms_p50": self.obstacles3d_ms.percentile(50),
                "obstacles3d_latency_ms_p50": self.obstacles3d_age_ms.percentile(50),
                "obstacles3d_latency_ms_p95": self.obstacles3d_age_ms.percentile(95),
                "internal_error": sum(self.internal_errors.values()),
                "flagged_share_mean": self.flagged.mean if self.flagged.shares else None,
                "flagged_share_frames": len(self.flagged.shares),
                "bad_input": dict(self.bad_input),
                "internal_errors": dict(self.internal_errors),
            }
