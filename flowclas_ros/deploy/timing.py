"""Wall-clock timing that survives a shared, noisy machine: warm-up, then per-call milliseconds;
several callables measured in alternating rounds so every speed ratio compares like with like."""
from __future__ import annotations

import time
from typing import Callable


def time_calls(fn: Callable[[], object], frames: int, warmup: int = 3) -> list[float]:
    """ms of each of `frames` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int = 10, per_round: int = 10,
                      settle_s: float = 0.3) -> dict[str, list[list[float]]]:
    """ms of several calls measured in alternating rounds (a, b, c, a, b, c, ...), so all see the
    same machine state (turbo, other load, cache); returns each call's times round by round.
    Used for every speed ratio: back-to-back blocks gave ORT-vs-torch ratios from 2.5x to 4.8x
    on the same machine within an hour. Each block starts after a pause and warm-up calls, so the
    other runtimes' busy-waiting threads (ORT spinning, OpenMP) have gone idle and do not steal
    the cores."""
    out: dict[str, list[list[float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle_s)
            out[name].append(time_calls(fn, per_round, warmup=3))
    return out
