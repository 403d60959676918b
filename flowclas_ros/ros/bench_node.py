"""The node end to end: a camera publishing at a fixed rate in this process, the real node in
another with all three outputs subscribed (so it computes and publishes heatmap, mask and overlay),
latency from the image stamp to receipt of the heatmap, processed rate, drops, and the node's
memory over the run (flat memory = no queue growth, no leak)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from flowclas_ros.ros.live import (
    NodeRunner,
    image_msg,
    latest_diagnostics,
    participant,
    qos,
    wait_until_ready,
)
from flowclas_ros.runtime.node_interface import DIAGNOSTICS_TOPIC
from flowclas_ros.runtime.pipeline import stamp_ns


def node_benchmark(model_path: Path, frame: np.ndarray, rate_hz: float = 30.0,
                   seconds: float = 60.0, namespace: str = "/flowclas_bench",
                   params: Optional[dict[str, Any]] = None) -> dict:
    """`params`: node parameters (e.g. {"intra_op_spinning": False})."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    runner = NodeRunner(model_path, namespace, params)
    latencies: list[float] = []
    diagnostics: dict[str, str] = {}
    rss: list[tuple[float, float]] = []
    warm = threading.Event()

    def on_heatmap(msg: Image) -> None:
        if warm.is_set():
            latencies.append((time.time_ns() - stamp_ns(msg)) / 1e6)

    try:
        with participant("flowclas_bench_camera") as node:
            node.create_subscription(Image, runner.topics["heatmap"], on_heatmap, qos(True, 10))
            for other in ("mask", "overlay"):  # as an operator's RViz would: all outputs
                node.create_subscription(Image, runner.topics[other], lambda _m: None, qos(True, 10))
            node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                     latest_diagnostics(diagnostics, runner.base), 10)
            camera = node.create_publisher(Image, f"{namespace}/camera/image_raw", qos(False, 1))
            answered = threading.Event()
            probe = node.create_subscription(Image, runner.topics["heatmap"],
                                             lambda _m: answered.set(), qos(True, 10))
            wait_until_ready(runner, node, camera, frame, answered.is_set)
            node.destroy_subscription(probe)
            msg = image_msg(frame, 0)
            base = {k: int(diagnostics.get(k, 0)) for k in ("received", "processed", "dropped")}
            warm.set()
            sent, t0 = 0, time.monotonic()
            cpu0 = runner.cpu_seconds()
            next_rss = t0
            while time.monotonic() - t0 < seconds:
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
                camera.publish(msg)
                sent += 1
                now = time.monotonic()
                if now >= next_rss:
                    rss.append((now - t0, runner.rss_mb()))
                    next_rss += 1.0
                time.sleep(max(0.0, t0 + sent / rate_hz - time.monotonic()))
            elapsed = time.monotonic() - t0
            cpu = runner.cpu_seconds() - cpu0
            time.sleep(1.5)
            received = len(latencies)
    finally:
        runner.stop()
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    t, mb = (np.asarray(v) for v in zip(*rss)) if len(rss) > 1 else (np.zeros(2), np.full(2, np.nan))
    half = len(mb) // 2
    return {
        "node_camera": f"{frame.shape[1]}x{frame.shape[0]}", "node_rate_requested_hz": rate_hz,
        "node_seconds": elapsed, "node_sent": sent, "node_heatmaps_received": received,
        "node_rate_hz": received / elapsed,
        # CPU of the node process over the run, in % of one core (all its threads)
        "node_cpu_percent": 100.0 * cpu / elapsed,
        "node_params": dict(params or {}),
        "node_latency_ms_p50": float(np.percentile(lat, 50)),
        "node_latency_ms_p95": float(np.percentile(lat, 95)),
        "node_latency_ms_p99": float(np.percentile(lat, 99)),
        "node_dropped": int(diagnostics.get("dropped", 0)) - base["dropped"],
        "node_received": int(diagnostics.get("received", 0)) - base["received"],
        "node_rss_mb_start": float(mb[0]), "node_rss_mb_end": float(mb[-1]),
        "node_rss_mb_max": float(np.nanmax(mb)),
        # memory growth between the first and second half of the run (MB): ~0 = flat
        "node_rss_growth_mb": float(np.nanmean(mb[half:]) - np.nanmean(mb[:half])) if half else 0.0,
    }
