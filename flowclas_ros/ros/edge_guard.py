"""The last line of defence: no exception in a callback, timer or worker thread ends the node.

rclpy lets an exception raised in a subscription callback or a timer escape the executor's spin,
which ends the process; an exception in a worker thread ends that thread silently, and with it
the node's inference. Every entry point of the node therefore runs under `EdgeGuard.run`: an
exception is caught at the edge, counted (`internal_error` in diagnostics, which reads ERROR while
one is recent), logged with its traceback the first time per site and throttled afterwards, and
the next message or frame is processed as usual.

Logging never changes severity at one call site (rclpy refuses that with a ValueError): each
method here logs at one fixed level.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Optional, TypeVar

from flowclas_ros.ros.stats import NodeStats, Throttle

T = TypeVar("T")


class EdgeGuard:
    """Runs callables so that no exception escapes; one per node."""

    def __init__(self, logger: Any, stats: NodeStats, throttle: Throttle) -> None:
        self.logger, self.stats, self.throttle = logger, stats, throttle
        self._traced: set[str] = set()  # sites whose traceback has been logged once

    def run(self, site: str, fn: Callable[..., T], *args: Any, fallback: Optional[T] = None) -> Optional[T]:
        """`fn(*args)`, or `fallback` when it raises (counted and logged)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the edge: nothing may end the node
            self.caught(site, exc)
            return fallback

    def wrap(self, site: str, fn: Callable[..., T], fallback: Optional[T] = None) -> Callable[..., Optional[T]]:
        """`fn` as a callback that never raises (for subscriptions and timers)."""
        return lambda *args: self.run(site, fn, *args, fallback=fallback)

    def caught(self, site: str, exc: BaseException) -> None:
        """Count and log an exception caught at `site`."""
        self.stats.on_internal_error(site)
        try:
            allowed, suppressed = self.throttle.allow(f"internal_error.{site}")
            if not allowed:
                return
            more = f" ({suppressed} more suppressed)" if suppressed else ""
            if site in self._traced:
                text = f"internal error in {site}, frame skipped, node continues{more}: {type(exc).__name__}: {exc}"
            else:
                self._traced.add(site)
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
                text = f"internal error in {site}, frame skipped, node continues{more}:\n{trace}"
            self.logger.error(text)
        except Exception:  # noqa: BLE001 - the logger itself failed (e.g. at shutdown)
            print(f"flowclas_detector: internal error in {site}: {exc!r}", file=sys.stderr, flush=True)
