"""Running the real node next to a second DDS participant on this machine: shared by the live demo
and the end-to-end benchmark (the tests have their own harness with the same habits)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..runtime.images import to_msg_fields

STARTUP_TIMEOUT_S = 60.0


def large_image_dds_profile() -> Optional[Path]:
    """config/fastdds_large_images.xml from the source tree or the install prefix, if present."""
    for base in (Path(__file__).resolve().parents[2] / "config",
                 Path(sys.prefix) / "share" / "flowclas_ros" / "config"):
        path = base / "fastdds_large_images.xml"
        if path.is_file():
            return path
    return None


def isolate_dds() -> dict[str, str]:
    """Localhost-only discovery, a per-process domain id and the large-image Fast DDS profile
    (each unless already set); applied to this process and returned for child processes."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))}
    profile = large_image_dds_profile()
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    os.environ.update(env)
    return dict(os.environ)


class NodeRunner:
    """`python -m flowclas_ros.ros.node` in a subprocess, output collected, stopped with SIGINT."""

    def __init__(self, model_path: Path, namespace: str, params: Optional[dict[str, Any]] = None) -> None:
        cmd = [sys.executable, "-m", "flowclas_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
               "-r", f"image:={namespace}/camera/image_raw", "-p", f"model_path:={model_path}"]
        for k, v in (params or {}).items():
            cmd += ["-p", f"{k}:={v}"]
        self.proc = subprocess.Popen(cmd, env=isolate_dds(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(l.rstrip() for l in self.proc.stdout),
                         daemon=True).start()
        self.base = f"{namespace}/flowclas_detector"

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)


@contextmanager
def participant(name: str) -> Iterator[Any]:
    """An rclpy node spun on a background thread; torn down in order on exit."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    isolate_dds()
    rclpy.init()
    node = rclpy.create_node(name)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        yield node
    finally:
        ex.shutdown()
        spin.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera_optical_frame"):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = "rgb8"
    msg.data, msg.step = to_msg_fields(rgb, "rgb8")
    return msg


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def qos(reliable: bool, depth: int):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def wait_until_ready(runner: NodeRunner, node: Any, camera: Any, first_frame: np.ndarray,
                     answered: Any) -> None:
    """Wait for discovery, then re-send a first frame until `answered()` is true, so every
    endpoint is matched before measuring (best effort drops frames sent before that)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not answered():
        if runner.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the detector node did not come up:\n" + runner.log)
        if camera.get_subscription_count() > 0:
            camera.publish(image_msg(first_frame, time.time_ns()))
        time.sleep(0.2)
    time.sleep(0.3)


def latest_diagnostics(store: dict, base: str):
    """A /diagnostics callback that keeps the node's latest key/values in `store`."""

    def cb(msg: Any) -> None:
        for s in msg.status:
            if s.name.startswith(base):
                store.clear()
                store.update({kv.key: kv.value for kv in s.values})

    return cb
