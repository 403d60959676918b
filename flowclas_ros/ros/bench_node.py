"""The node end to end: a camera publishing at a fixed rate in this process, the real node in
another with all three outputs subscribed (so it computes and publishes heatmap, mask and overlay),
latency from the image stamp to receipt of the heatmap, processed rate, drops, and the node's
memory over the run (flat memory = no queue growth, no leak).

With a depth image, the camera also publishes it (16UC1 mm, as RGB-D drivers do) and a CameraInfo
with each frame's stamp, the node runs with `use_depth` and both 3D outputs are subscribed; the
latency is then taken at receipt of ~/obstacles, the last output the node publishes per frame."""
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
from flowclas_ros.runtime.node_interface import DIAGNOSTICS_TOPIC, output_topics_3d
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, camera_info_fields
from flowclas_ros.runtime.pipeline import stamp_ns


def node_benchmark(model_path: Path, frame: np.ndarray, rate_hz: float = 30.0,
                   seconds: float = 60.0, namespace: str = "/flowclas_bench",
                   params: Optional[dict[str, Any]] = None,
                   depth: Optional[tuple[np.ndarray, CameraIntrinsics]] = None) -> dict:
    """`params`: node parameters (e.g. {"intra_op_spinning": False}). `depth`: (depth in metres
    aligned to `frame`, its intrinsics) to run the node's 3D outputs too."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    params = dict(params or {})
    if depth is not None:
        params["use_depth"] = "true"
    runner = NodeRunner(model_path, namespace, params)
    latencies: list[float] = []
    heatmap_latencies: list[float] = []
    diagnostics: dict[str, str] = {}
    rss: list[tuple[float, float]] = []
    warm = threading.Event()

    def on_heatmap(msg: Image) -> None:
        if warm.is_set():
            heatmap_latencies.append((time.time_ns() - stamp_ns(msg)) / 1e6)
            if depth is None:
                latencies.append(heatmap_latencies[-1])

    def on_obstacles(msg: MarkerArray) -> None:
        if warm.is_set() and msg.markers:
            latencies.append((time.time_ns() - stamp_ns(msg.markers[0])) / 1e6)

    try:
        with participant("flowclas_bench_camera") as node:
            node.create_subscription(Image, runner.topics["heatmap"], on_heatmap, qos(True, 10))
            for other in ("mask", "overlay"):  # as an operator's RViz would: all outputs
                node.create_subscription(Image, runner.topics[other], lambda _m: None, qos(True, 10))
            node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                     latest_diagnostics(diagnostics, runner.base), 10)
            camera = node.create_publisher(Image, f"{namespace}/camera/image_raw", qos(False, 1))
            if depth is not None:
                out3d = output_topics_3d(namespace)
                node.create_subscription(PointCloud2, out3d["points"], lambda _m: None, qos(True, 10))
                node.create_subscription(MarkerArray, out3d["markers"], on_obstacles, qos(True, 10))
                depth_pub = node.create_publisher(Image, f"{namespace}/camera/depth/image_raw",
                                                  qos(False, 1))
                info_pub = node.create_publisher(CameraInfo, f"{namespace}/camera/camera_info",
                                                 qos(True, 1))
                mm = np.nan_to_num(np.clip(depth[0] * 1000.0, 0, 65535), nan=0, posinf=0).astype(np.uint16)
                depth_msg = image_msg(mm, 0, encoding="16UC1")
                info_msg = CameraInfo(**camera_info_fields(depth[1]))
                info_msg.header.frame_id = depth_msg.header.frame_id
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
                if depth is not None:  # an RGB-D camera: depth and info with the colour stamp
                    depth_msg.header.stamp = info_msg.header.stamp = msg.header.stamp
                    info_pub.publish(info_msg)
                    depth_pub.publish(depth_msg)
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
            received = len(heatmap_latencies)
    finally:
        runner.stop()
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    heat = np.asarray(heatmap_latencies) if heatmap_latencies else np.asarray([np.nan])
    t, mb = (np.asarray(v) for v in zip(*rss)) if len(rss) > 1 else (np.zeros(2), np.full(2, np.nan))
    half = len(mb) // 2
    return {
        "node_camera": f"{frame.shape[1]}x{frame.shape[0]}", "node_rate_requested_hz": rate_hz,
        "node_seconds": elapsed, "node_sent": sent, "node_heatmaps_received": received,
        "node_rate_hz": received / elapsed,
        # CPU of the node process over the run, in % of one core (all its threads)
        "node_cpu_percent": 100.0 * cpu / elapsed,
        "node_params": {k: v for k, v in params.items() if k != "use_depth"},
        "node_latency_ms_p50": float(np.percentile(lat, 50)),
        "node_latency_ms_p95": float(np.percentile(lat, 95)),
        "node_latency_ms_p99": float(np.percentile(lat, 99)),
        # with depth: latency is stamp -> ~/obstacles received; this is stamp -> heatmap
        "node_depth": depth is not None,
        "node_heatmap_latency_ms_p50": float(np.percentile(heat, 50)),
        "node_heatmap_latency_ms_p95": float(np.percentile(heat, 95)),
        "node_3d_received": len(latencies) if depth is not None else 0,
        "node_depth_matched": int(diagnostics.get("depth_matched", 0)),
        "node_depth_unmatched": int(diagnostics.get("depth_unmatched", 0)),
        "node_obstacles3d_ms_p50": _float(diagnostics.get("obstacles3d_ms_p50")),
        # what the depth region stage did (a model that carries it): frames per outcome
        "node_depth_regions": {k[len("depth_regions_"):]: int(v) for k, v in diagnostics.items()
                               if k.startswith("depth_regions_")},
        "node_dropped": int(diagnostics.get("dropped", 0)) - base["dropped"],
        "node_received": int(diagnostics.get("received", 0)) - base["received"],
        "node_rss_mb_start": float(mb[0]), "node_rss_mb_end": float(mb[-1]),
        "node_rss_mb_max": float(np.nanmax(mb)),
        # memory growth between the first and second half of the run (MB): ~0 = flat
        "node_rss_growth_mb": float(np.nanmean(mb[half:]) - np.nanmean(mb[:half])) if half else 0.0,
    }


def _float(value: Optional[str]) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
