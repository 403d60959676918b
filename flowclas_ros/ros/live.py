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

from flowclas_ros.runtime.model_info import shipped_dirs
from flowclas_ros.runtime.node_interface import NODE_NAME, output_topics

STARTUP_TIMEOUT_S = 60.0


def large_image_dds_profile() -> Optional[Path]:
    """config/fastdds_large_images.xml where the package's config is shipped, if present."""
    for base in shipped_dirs("config"):
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
               "-r", f"image:={namespace}/camera/image_raw",
               "-r", f"depth/image:={namespace}/camera/depth/image_raw",
               "-r", f"camera_info:={namespace}/camera/camera_info", "-p", f"model_path:={model_path}"]
        for k, v in (params or {}).items():
            cmd += ["-p", f"{k}:={v}"]
        self.proc = subprocess.Popen(cmd, env=isolate_dds(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(l.rstrip() for l in self.proc.stdout),
                         daemon=True).start()
        self.base = f"{namespace}/{NODE_NAME}"
        self.topics = output_topics(namespace)  # the node's outputs: heatmap, mask, overlay

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

    def cpu_seconds(self) -> float:
        """User + system CPU time of the node process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
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
    """An rclpy node in its own context, spun on a background thread; torn down in order on exit.
    Its own context, so it works beside any other rclpy use in the same process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    isolate_dds()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        yield node
    finally:
        ex.shutdown()
        spin.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def image_msg(array: np.ndarray, stamp: int, frame_id: str = "camera_optical_frame",
              encoding: str = "rgb8"):
    """A camera frame as sensor_msgs/Image with the given stamp (ns) and frame_id."""
    from std_msgs.msg import Header

    from flowclas_ros.ros.messages import array_to_image_msg

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return array_to_image_msg(array, encoding, header)


def qos(reliable: bool, depth: int):
    from flowclas_ros.ros.qos import profile

    return profile(reliable, depth)


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
