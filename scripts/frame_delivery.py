"""What arrives: a camera publishing into the node started by `ros2 launch`, counted at the node.

    source .venv/ros2-env.sh && source WS/install/setup.bash   # a colcon-built workspace
    python scripts/frame_delivery.py [--frames 60] [--node-profile default|none] [--camera-profile FILE]

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

# The camera: a stock driver with Fast DDS's defaults, unless --camera-profile FILE (read here,
# before rclpy starts Fast DDS).
_CAMERA_PROFILE = sys.argv[sys.argv.index("--camera-profile") + 1] if "--camera-profile" in sys.argv else None
os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
if _CAMERA_PROFILE:
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = _CAMERA_PROFILE
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from flowclas_ros.ros.messages import array_to_image_msg  # noqa: E402
from flowclas_ros.runtime.node_interface import output_topics  # noqa: E402


def run_setting(width: int, height: int, rate: float, reliable: bool, frames: int,
                node_profile: str, compressed: bool = False, reliable_reader: bool = False) -> dict:
    ns = f"fd{random.randint(0, 99999)}"
    cam_topic = f"/{ns}_cam/image_raw"
    args = [f"image_topic:={cam_topic}", f"namespace:={ns}"]
    if compressed:
        args.append("compressed:=true")
    if reliable_reader:  # the node's subscription made reliable the REP-2003 way
        import tempfile

        sub_topic = cam_topic + ("/compressed" if compressed else "")
        params = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        params.write(f"/**:\n  ros__parameters:\n    qos_overrides:\n      {sub_topic}:\n"
                     "        subscription: {reliability: reliable, depth: 2}\n")
        params.close()
        args.append(f"params_file:={params.name}")
    if node_profile != "default":
        args.append(f"dds_profile:={node_profile}")  # none, or a profile file
    launch = subprocess.Popen(["ros2", "launch", "flowclas_ros", "detector.launch.py", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    node = rclpy.create_node(f"camera_{ns}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    qos = (QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
           if reliable else QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                       reliability=ReliabilityPolicy.BEST_EFFORT))
    pub = node.create_publisher(CompressedImage if compressed else Image,
                                cam_topic + ("/compressed" if compressed else ""), qos)
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
        rgb = _scene(height, width)
        jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        t0 = time.monotonic()
        for i in range(frames):
            if compressed:
                msg = CompressedImage(header=_header(10**12 + i), format="rgb8; jpeg compressed bgr8",
                                      data=jpeg)
            else:
                msg = array_to_image_msg(rgb, "rgb8", _header(10**12 + i))
            pub.publish(msg)
            while time.monotonic() < t0 + (i + 1) / rate:
                ex.spin_once(timeout_sec=0.005)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        received = int(diag.get("received", 0)) - base
        return {"size": f"{width}x{height}" + (" jpeg" if compressed else ""), "rate": rate,
                "qos": "reliable" if reliable else "best_effort",
                "sent": frames, "received": received, "answered": len(answered)}
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        launch.wait(timeout=30)
        node.destroy_node()


def _scene(height: int, width: int) -> np.ndarray:
    """A camera-like frame (smooth gradients, texture): JPEG-compresses as real frames do."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 60 * np.sin(x / 40), 128 + 60 * np.cos(y / 30), 100 + 0.1 * x], -1)
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _header(stamp: int):
    from std_msgs.msg import Header

    h = Header(frame_id="camera")
    h.stamp.sec, h.stamp.nanosec = divmod(stamp, 10**9)
    return h


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--node-profile", default="default",
                   help="default (the package's), none (Fast DDS defaults) or a profile file")
    p.add_argument("--settings", default="640x480@10,640x480@30,1280x720@10,1280x720@30")
    p.add_argument("--camera-profile", help="a Fast DDS profile for the camera side (default: none)")
    p.add_argument("--compressed", action="store_true", help="the camera publishes JPEG CompressedImage")
    p.add_argument("--reliable-reader", action="store_true",
                   help="the node's subscription made reliable with a qos_overrides parameter")
    a = p.parse_args()
    rclpy.init()
    print("| camera | rate | camera QoS | sent | received by the node | answered |")
    print("|---|---|---|---|---|---|")
    for setting in a.settings.split(","):
        size, rate = setting.split("@")
        w, h = (int(v) for v in size.split("x"))
        for reliable in ((True,) if a.reliable_reader else (True, False)):  # reliable readers: reliable cameras only
            r = run_setting(w, h, float(rate), reliable, a.frames, a.node_profile, a.compressed,
                            a.reliable_reader)
            if r is None:
                continue
            print(f"| {r['size']} | {r['rate']:g} Hz | {r['qos']} | {r['sent']} | {r['received']} "
                  f"({100 * r['received'] / r['sent']:.0f} %) | {r['answered']} ({100 * r['answered'] / r['sent']:.0f} %) |",
                  flush=True)
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
