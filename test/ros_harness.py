"""Test harness for the ROS 2 node: the node runs as a real subprocess, the test process is a
second real DDS participant (rclpy over Fast DDS), isolated by a per-run domain id on localhost."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(20, 99)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
from flowclas_ros.ros import live  # noqa: E402

os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(live.large_image_dds_profile()))

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

SENSOR_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class NodeProcess:
    """`python -m flowclas_ros.ros.node --ros-args ...` with its output captured."""

    def __init__(self, params: dict[str, Any], namespace: str, remap: Optional[dict[str, str]] = None) -> None:
        args = [sys.executable, "-m", "flowclas_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        for k, v in (remap or {}).items():
            args += ["-r", f"{k}:={v}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Peer:
    """The test's own DDS participant: publishes frames, collects outputs by topic."""

    def __init__(self, name: str = "flowclas_test_peer") -> None:
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile = RELIABLE_QOS) -> None:
        self.received.setdefault(topic, [])

        def cb(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, cb, qos)

    def messages(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def clear(self) -> None:
        with self._lock:
            for v in self.received.values():
                v.clear()

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()


def image_msg(array: np.ndarray, encoding: str, stamp: int, frame_id: str = "camera_optical_frame",
              step: Optional[int] = None, data: Optional[bytes] = None):
    """The product's message builder, with `step` / `data` overridable to forge bad frames."""
    msg = live.image_msg(array, stamp, frame_id, encoding)
    if data is not None:
        msg.data = data
    if step is not None:
        msg.step = step
    return msg


