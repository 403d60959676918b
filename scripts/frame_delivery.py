"""What arrives: a camera publishing into the node started by `ros2 launch`, counted at the node.

    source .venv/ros2-env.sh && source WS/install/setup.bash   # a colcon-built workspace
    python scripts/frame_delivery.py [--frames 60] [--node-profile default|none]

For each camera setting (resolution, rate, reliable or best-effort QoS) the camera runs in this
process with Fast DDS's defaults (no profile of its own, as a stock camera driver), the node is
started by `ros2 launch flowclas_ros detector.launch.py` (with the package's large-image profile
unless --node-profile none), and the node's /diagnostics give how many frames it received; the
node's obstacle masks received here give how many it answered. One line per setting.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time

os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the camera: a stock driver, no profile
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from flowclas_ros.ros.messages import array_to_image_msg  # noqa: E402
from flowclas_ros.runtime.node_interface import output_topics  # noqa: E402


def run_setting(width: int, height: int, rate: float, reliable: bool, frames: int,
                node_profile: str) -> dict:
    ns = f"fd{random.randint(0, 99999)}"
    cam_topic = f"/{ns}_cam/image_raw"
    args = [f"image_topic:={cam_topic}", f"namespace:={ns}"]
    if node_profile == "none":
        args.append("dds_profile:=none")
    launch = subprocess.Popen(["ros2", "launch", "flowclas_ros", "detector.launch.py", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    node = rclpy.create_node(f"camera_{ns}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    qos = (QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
           if reliable else QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                       reliability=ReliabilityPolicy.BEST_EFFORT))
    pub = node.create_publisher(Image, cam_topic, qos)
    answered: set[int] = set()
    diag: dict[str, str] = {}
    node.create_subscription(Image, output_topics(ns)["mask"],
                             lambda m: answered.add(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if f"/{ns}/" in st.name:
                diag.update({kv.key: kv.value for kv in st.values})
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    try:
        deadline = time.monotonic() + 90
        while pub.get_subscription_count() == 0 or not diag:
            ex.spin_once(timeout_sec=0.1)
            if time.monotonic() > deadline:
                raise TimeoutError("the launched node did not come up")
        base = int(diag.get("received", 0))
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        t0 = time.monotonic()
        for i in range(frames):
            msg = array_to_image_msg(rgb, "rgb8", _header(10**12 + i))
            pub.publish(msg)
            while time.monotonic() < t0 + (i + 1) / rate:
                ex.spin_once(timeout_sec=0.005)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        received = int(diag.get("received", 0)) - base
        return {"size": f"{width}x{height}", "rate": rate, "qos": "reliable" if reliable else "best_effort",
                "sent": frames, "received": received, "answered": len(answered)}
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        launch.wait(timeout=30)
        node.destroy_node()


def _header(stamp: int):
    from std_msgs.msg import Header

    h = Header(frame_id="camera")
    h.stamp.sec, h.stamp.nanosec = divmod(stamp, 10**9)
    return h


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--node-profile", choices=("default", "none"), default="default")
    p.add_argument("--settings", default="640x480@10,640x480@30,1280x720@10,1280x720@30")
    a = p.parse_args()
    rclpy.init()
    print("| camera | rate | camera QoS | sent | received by the node | answered |")
    print("|---|---|---|---|---|---|")
    for setting in a.settings.split(","):
        size, rate = setting.split("@")
        w, h = (int(v) for v in size.split("x"))
        for reliable in (True, False):
            r = run_setting(w, h, float(rate), reliable, a.frames, a.node_profile)
            print(f"| {r['size']} | {r['rate']:g} Hz | {r['qos']} | {r['sent']} | {r['received']} "
                  f"({100 * r['received'] / r['sent']:.0f} %) | {r['answered']} ({100 * r['answered'] / r['sent']:.0f} %) |",
                  flush=True)
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
