"""The live demo: the real detector node in its own process, and in this process a camera source
that publishes sample frames over DDS and a viewer that subscribes to the outputs. Two real ROS 2
participants; nothing is mocked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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


@dataclass
class LiveAnswer:
    index: int
    latency_ms: float  # camera stamp -> overlay received by the viewer
    obstacles: int
    overlay: np.ndarray  # bgr8


@dataclass
class LiveRun:
    results: list[LiveAnswer] = field(default_factory=list)
    sent: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)
    node_log: str = ""


def run_live(model_path: Path, frames: Sequence[np.ndarray], rate_hz: float = 10.0,
             namespace: str = "/flowclas_demo") -> LiveRun:
    """Start the node, publish `frames` at `rate_hz`, collect overlays, masks and diagnostics,
    stop the node with SIGINT."""
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    runner = NodeRunner(model_path, namespace, {"min_obstacle_area": 20})
    run = LiveRun()
    overlays: dict[int, tuple[float, np.ndarray]] = {}
    masks: dict[int, int] = {}

    def on_overlay(msg: Image) -> None:
        got = time.time_ns()
        img = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        overlays[stamp_ns(msg)] = ((got - stamp_ns(msg)) / 1e6, img.copy())

    def on_mask(msg: Image) -> None:
        m = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
        masks[stamp_ns(msg)] = cv2.connectedComponents((m > 0).astype(np.uint8), connectivity=8)[0] - 1

    try:
        with participant("flowclas_demo_viewer") as viewer:
            viewer.create_subscription(Image, runner.topics["overlay"], on_overlay, qos(True, 50))
            viewer.create_subscription(Image, runner.topics["mask"], on_mask, qos(True, 50))
            viewer.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                       latest_diagnostics(run.diagnostics, runner.base), 10)
            camera = viewer.create_publisher(Image, f"{namespace}/camera/image_raw", qos(False, 1))
            wait_until_ready(runner, viewer, camera, frames[0], lambda: bool(overlays))
            overlays.clear()
            stamps = []
            t_next = time.monotonic()
            for rgb in frames:
                st = time.time_ns()
                camera.publish(image_msg(rgb, st))
                stamps.append(st)
                t_next += 1.0 / rate_hz
                time.sleep(max(0.0, t_next - time.monotonic()))
            run.sent = len(stamps)
            time.sleep(1.5)  # the last outputs and a diagnostics message
            for i, st in enumerate(stamps):
                if st in overlays:
                    lat, img = overlays[st]
                    run.results.append(LiveAnswer(i, lat, masks.get(st, -1), img))
    finally:
        runner.stop()
        run.node_log = runner.log
    return run
