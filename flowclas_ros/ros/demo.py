"""The live demo: the real detector node in its own process, and in this process a camera source
that publishes sample frames over DDS and a viewer that subscribes to the outputs. Two real ROS 2
participants; nothing is mocked.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..runtime.images import to_msg_fields

STARTUP_TIMEOUT_S = 60.0


@dataclass
class FrameResult:
    index: int
    latency_ms: float  # camera stamp -> overlay received by the viewer
    obstacles: int
    overlay: np.ndarray  # bgr8


@dataclass
class LiveRun:
    results: list[FrameResult] = field(default_factory=list)
    sent: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)
    node_log: str = ""


def _image_msg(rgb: np.ndarray, stamp_ns: int):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera_optical_frame"
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = "rgb8"
    msg.data, msg.step = to_msg_fields(rgb, "rgb8")
    return msg


def large_image_dds_profile() -> Optional[Path]:
    """config/fastdds_large_images.xml from the source tree or the install prefix, if present."""
    for base in (Path(__file__).resolve().parents[2] / "config",
                 Path(sys.prefix) / "share" / "flowclas_ros" / "config"):
        path = base / "fastdds_large_images.xml"
        if path.is_file():
            return path
    return None


def run_live(model_path: Path, frames: Sequence[np.ndarray], rate_hz: float = 10.0,
             namespace: str = "/flowclas_demo", params_file: Optional[Path] = None) -> LiveRun:
    """Start the node, publish `frames` at `rate_hz`, collect overlays, masks and diagnostics,
    stop the node with SIGINT. Domain and discovery are isolated to this machine."""
    import cv2
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    profile = large_image_dds_profile()
    if profile is not None:
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")
    os.environ.update({k: env[k] for k in keys if k in env})
    cmd = [sys.executable, "-m", "flowclas_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
           "-r", f"image:={namespace}/camera/image_raw", "-p", f"model_path:={model_path}",
           "-p", "min_obstacle_area:=20"]
    if params_file:
        cmd[4:4] = ["--params-file", str(params_file)]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(l.rstrip() for l in node.stdout), daemon=True).start()

    rclpy.init()
    viewer = rclpy.create_node("flowclas_demo_viewer")
    ex = SingleThreadedExecutor()
    ex.add_node(viewer)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    run = LiveRun()
    overlays: dict[int, tuple[float, np.ndarray]] = {}
    masks: dict[int, int] = {}
    base = f"{namespace}/flowclas_detector"

    def on_overlay(msg: Image) -> None:
        got = time.time_ns()
        st = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        img = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        overlays[st] = ((got - st) / 1e6, img.copy())

    def on_mask(msg: Image) -> None:
        st = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        m = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
        masks[st] = cv2.connectedComponents((m > 0).astype(np.uint8), connectivity=8)[0] - 1

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith(base):
                run.diagnostics = {kv.key: kv.value for kv in s.values}

    reliable = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    viewer.create_subscription(Image, f"{base}/overlay", on_overlay, reliable)
    viewer.create_subscription(Image, f"{base}/obstacle_mask", on_mask, reliable)
    viewer.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    camera = viewer.create_publisher(Image, f"{namespace}/camera/image_raw", QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while camera.get_subscription_count() == 0 or viewer.count_publishers(f"{base}/overlay") == 0:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the detector node did not come up:\n" + "\n".join(log))
            time.sleep(0.05)
        # Prime: re-send a first frame until its overlay comes back, so discovery of every
        # endpoint has finished before the measured stream starts (best effort drops early frames).
        while not overlays:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the detector node did not answer:\n" + "\n".join(log))
            camera.publish(_image_msg(frames[0], time.time_ns()))
            time.sleep(0.2)
        time.sleep(0.3)
        overlays.clear()
        stamps = []
        period = 1.0 / rate_hz
        t_next = time.monotonic()
        for rgb in frames:
            st = time.time_ns()
            camera.publish(_image_msg(rgb, st))
            stamps.append(st)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        run.sent = len(stamps)
        time.sleep(1.5)  # last outputs and a diagnostics message
        for i, st in enumerate(stamps):
            if st in overlays:
                lat, img = overlays[st]
                run.results.append(FrameResult(i, lat, masks.get(st, -1), img))
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
        ex.shutdown()
        spin.join(timeout=5)
        viewer.destroy_node()
        rclpy.try_shutdown()
        run.node_log = "\n".join(log)
    return run
