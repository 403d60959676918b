"""What arrives: a camera publishing into the node started by `ros2 launch`, counted at the node.

    source .venv/ros2-env.sh && source WS/install/setup.bash   # a colcon-built workspace
    python scripts/frame_delivery.py [--frames 60] [--node-profile default|none] [--camera-profile FILE]
    python scripts/frame_delivery.py --depth 16UC1,32FC1 --settings 640x480@10,640x480@30 [--json]

For each camera setting (resolution, rate, reliable or best-effort QoS) the camera runs in this
process with Fast DDS's defaults (no profile of its own, as a stock camera driver), the node is
started by `ros2 launch flowclas_ros detector.launch.py` (with the package's large-image profile
unless --node-profile none), and the node's /diagnostics give how many frames it received; the
node's obstacle masks received here give how many it answered. One line per setting.

With --depth, the camera is an RGB-D driver with the ROS default QoS (reliable, keep last 10) and
no profile: a PyBullet benchmark frame (rgb8), its aligned depth in each listed encoding and its
CameraInfo, all with one stamp per frame (and a second more of them, not counted, as a camera
streams on); the node runs `use_depth:=true` with the shipped default model. Per setting: heatmaps
received, non-empty point clouds received whose every point lies on the published depth at a pixel
of the node's obstacle mask for that stamp, and the latency of the 3D outputs (stamp -> cloud
received here).

Counting starts once the node has answered a warm-up frame (its own stamps, never counted): the
camera's writers finding the node's readers says nothing of the node's output writers finding this
process's readers, and the node computes only the outputs somebody subscribes to, so frames sent
in between would be lost to discovery, not to delivery; start-up costs of the 3D path are paid by
the warm-up too.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Optional

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
from flowclas_ros.runtime.node_interface import output_topics, output_topics_3d  # noqa: E402
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, camera_info_fields, cloud_points  # noqa: E402


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
    with _launched(args):
        return _count_frames(ns, cam_topic, width, height, rate, reliable, frames, compressed)


def _count_frames(ns: str, cam_topic: str, width: int, height: int, rate: float, reliable: bool,
                  frames: int, compressed: bool) -> dict:
    node = rclpy.create_node(f"camera_{ns}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    qos = (QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
           if reliable else QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                       reliability=ReliabilityPolicy.BEST_EFFORT))
    pub = node.create_publisher(CompressedImage if compressed else Image,
                                cam_topic + ("/compressed" if compressed else ""), qos)
    answered: set[int] = set()
    node.create_subscription(Image, output_topics(ns)["mask"],
                             lambda m: answered.add(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    diag = _watch_diagnostics(node, ns)
    try:
        deadline = time.monotonic() + 90
        while pub.get_subscription_count() == 0 or not diag:
            ex.spin_once(timeout_sec=0.1)
            if time.monotonic() > deadline:
                raise TimeoutError("the launched node did not come up")
        rgb = _scene(height, width)
        jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()

        def frame(stamp: int):
            if compressed:
                return CompressedImage(header=_header(stamp), format="rgb8; jpeg compressed bgr8", data=jpeg)
            return array_to_image_msg(rgb, "rgb8", _header(stamp))

        _warm_up(ex, lambda stamp: pub.publish(frame(stamp)), lambda sent: bool(answered & sent))
        _fresh_diagnostics(ex, diag)
        base = int(diag.get("received", 0))
        counted = {10**12 + i for i in range(frames)}
        t0 = time.monotonic()
        for i in range(frames):
            pub.publish(frame(10**12 + i))
            while time.monotonic() < t0 + (i + 1) / rate:
                ex.spin_once(timeout_sec=0.005)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        received = int(diag.get("received", 0)) - base
        return {"size": f"{width}x{height}" + (" jpeg" if compressed else ""), "rate": rate,
                "qos": "reliable" if reliable else "best_effort",
                "sent": frames, "received": received, "answered": len(answered & counted)}
    finally:
        node.destroy_node()


def _watch_diagnostics(node, ns: str) -> dict[str, str]:
    """The node's latest diagnostics key/values, kept up to date by a /diagnostics subscription."""
    diag: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if f"/{ns}/" in st.name:
                diag.update({kv.key: kv.value for kv in st.values})
                diag[_DIAG_COUNT] = str(int(diag.get(_DIAG_COUNT, "0")) + 1)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    return diag


_DIAG_COUNT = "_messages_here"  # /diagnostics messages of the node received by this process
WARM_UP_TIMEOUT_S = 60.0
WARM_UP_PERIOD_S = 0.25


def _warm_up(ex, send, answered) -> None:
    """Send warm-up frames (`send(stamp)`, fresh stamps) until `answered(stamps sent)` is true:
    then every endpoint between the camera, the node and this process is matched both ways."""
    stamps: set[int] = set()
    deadline = time.monotonic() + WARM_UP_TIMEOUT_S
    while not answered(stamps):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the node answered none of {len(stamps)} warm-up frames")
        stamp = time.time_ns()
        stamps.add(stamp)
        send(stamp)
        end = time.monotonic() + WARM_UP_PERIOD_S
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)


def _fresh_diagnostics(ex, diag: dict[str, str]) -> None:
    """Spin until two more /diagnostics messages arrived: the counters then include the warm-up."""
    target = int(diag.get(_DIAG_COUNT, "0")) + 2
    deadline = time.monotonic() + 10.0
    while int(diag.get(_DIAG_COUNT, "0")) < target and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)


@contextmanager
def _launched(args: list[str]):
    """`ros2 launch flowclas_ros detector.launch.py ARGS` in its own process group, stopped with a
    terminal-style Ctrl-C; yields the launch process (its output is read by the caller if wanted)."""
    launch = subprocess.Popen(["ros2", "launch", "flowclas_ros", "detector.launch.py", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        yield launch
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        try:
            launch.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)


def _rgbd_frame(width: int, height: int) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
    """A PyBullet benchmark test frame with obstacles, its aligned depth (m) and intrinsics."""
    from flowclas_ros.tools.bench import sample_depth, sample_frame

    depth, k = sample_depth(height, width)
    return sample_frame(height, width), depth, k


def _depth_image(depth_m: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(the depth image as published, its metres as the node reads them: 0 = no reading)."""
    if encoding == "16UC1":  # millimetres, 0 = no reading (the sky), depth_scale 0.001
        raw = np.nan_to_num(np.clip(depth_m * 1000.0, 0, 65535), nan=0, posinf=0).astype(np.uint16)
        return raw, raw.astype(np.float32) * np.float32(0.001)
    raw = depth_m.astype(np.float32)
    return raw, np.where(np.isfinite(raw) & (raw > 0), raw, 0).astype(np.float32)


def _on_depth(points: np.ndarray, depth_m: np.ndarray, mask: np.ndarray, k: CameraIntrinsics) -> bool:
    """Every point back-projects onto a pixel of the obstacle mask, at that pixel's depth."""
    z = points[:, 2].astype(np.float64)
    if not np.all(z > 0):
        return False
    u = points[:, 0] * k.fx / z + k.cx
    v = points[:, 1] * k.fy / z + k.cy
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    if (np.abs(u - ui).max() > 0.01 or np.abs(v - vi).max() > 0.01 or ui.min() < 0 or vi.min() < 0
            or ui.max() >= depth_m.shape[1] or vi.max() >= depth_m.shape[0]):
        return False
    published = depth_m[vi, ui].astype(np.float64)
    return bool(np.all(np.abs(published - z) <= 1e-4 * np.maximum(z, 1.0)) and np.all(mask[vi, ui] > 0))


def _params_file(params: dict[str, str]) -> str:
    """A parameters file holding `params` (YAML values as given) for the launch's params_file."""
    import tempfile

    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write("/**:\n  ros__parameters:\n" + "".join(f"    {k}: {v}\n" for k, v in params.items()))
    f.close()
    return f.name


def run_depth_setting(width: int, height: int, rate: float, encoding: str, frames: int,
                      node_profile: str, node_params: Optional[dict[str, str]] = None,
                      model: Optional[str] = None) -> dict:
    """An RGB-D camera with the ROS default QoS and no DDS profile into `use_depth:=true`
    (`model`: the launch's model:= argument; default the shipped default model)."""
    ns = f"fdd{random.randint(0, 99999)}"
    cam = f"/{ns}_cam"
    args = [f"image_topic:={cam}/image_raw", f"namespace:={ns}", "use_depth:=true",
            f"depth_topic:={cam}/depth/image_raw", f"camera_info_topic:={cam}/camera_info"]
    if node_profile != "default":
        args.append(f"dds_profile:={node_profile}")
    if node_params:
        args.append(f"params_file:={_params_file(node_params)}")
    if model:
        args.append(f"model:={model}")
    rgb, depth_m, k = _rgbd_frame(width, height)
    raw_depth, published = _depth_image(depth_m, encoding)
    default_qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    out_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    from sensor_msgs.msg import CameraInfo, PointCloud2

    with _launched(args):
        node = rclpy.create_node(f"rgbd_camera_{ns}")
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        pubs = {"image": node.create_publisher(Image, f"{cam}/image_raw", default_qos),
                "depth": node.create_publisher(Image, f"{cam}/depth/image_raw", default_qos),
                "info": node.create_publisher(CameraInfo, f"{cam}/camera_info", default_qos)}
        heatmaps: set[int] = set()
        masks: dict[int, np.ndarray] = {}
        clouds: dict[int, tuple[np.ndarray, float]] = {}
        topics, topics3d = output_topics(ns), output_topics_3d(ns)
        stamp_of = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731
        node.create_subscription(Image, topics["heatmap"], lambda m: heatmaps.add(stamp_of(m)), out_qos)
        node.create_subscription(Image, topics["mask"], lambda m: masks.__setitem__(
            stamp_of(m), np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width)), out_qos)
        node.create_subscription(PointCloud2, topics3d["points"], lambda m: clouds.__setitem__(
            stamp_of(m), (cloud_points(m.data, m.width, m.height).copy(), time.time_ns())), out_qos)
        diag = _watch_diagnostics(node, ns)
        try:
            deadline = time.monotonic() + 90
            while not (all(p.get_subscription_count() >= 2 for p in pubs.values()) and diag):
                ex.spin_once(timeout_sec=0.1)
                if time.monotonic() > deadline:
                    raise TimeoutError("the launched node did not come up")
            info = CameraInfo(**camera_info_fields(k))
            info.header.frame_id = "camera"

            def send(stamp: int) -> None:
                info.header = _header(stamp)
                pubs["info"].publish(info)
                pubs["image"].publish(array_to_image_msg(rgb, "rgb8", _header(stamp)))
                pubs["depth"].publish(array_to_image_msg(raw_depth, encoding, _header(stamp)))

            _warm_up(ex, send, lambda sent: bool(sent & heatmaps & set(masks) & set(clouds)))
            _fresh_diagnostics(ex, diag)
            base = {key: diag.get(key) for key in _NODE_COUNTERS}
            stamps = []
            t0 = time.monotonic()
            trailing = max(5, round(TRAILING_S * rate))
            for i in range(frames + trailing):
                stamp = time.time_ns()  # the driver's clock: latency = receipt - stamp
                if i < frames:
                    stamps.append(stamp)
                send(stamp)
                while time.monotonic() < t0 + (i + 1) / rate:
                    ex.spin_once(timeout_sec=0.005)
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)
        finally:
            node.destroy_node()
    good = [st for st in stamps if st in clouds and len(clouds[st][0]) and st in masks
            and _on_depth(clouds[st][0], published, masks[st], k)]
    latency = np.asarray([(clouds[st][1] - st) / 1e6 for st in stamps if st in clouds] or [np.nan])
    return {"size": f"{width}x{height}", "rate": rate, "encoding": encoding, "sent": frames,
            "heatmaps": len(heatmaps & set(stamps)), "clouds": len(set(clouds) & set(stamps)),
            "frames_without_heatmap": [i for i, st in enumerate(stamps) if st not in heatmaps],
            "frames_without_cloud": [i for i, st in enumerate(stamps) if st not in good],
            "processed_without_cloud": [i for i, st in enumerate(stamps) if st in heatmaps and st not in clouds],
            "clouds_on_depth": len(good),
            "latency_3d_ms_p50": float(np.nanpercentile(latency, 50)),
            "latency_3d_ms_p95": float(np.nanpercentile(latency, 95)),
            "node": {k: _since(diag.get(k), base.get(k)) for k in _NODE_COUNTERS + _NODE_TIMINGS
                     if k in diag}}  # (the depth_regions_* counters exist only with the stage)


# The camera streams on for this long after the counted frames, as a camera does: a reliable
# writer resends a lost fragment once the reader learns of it, from the later samples' heartbeats,
# or when none follow from the periodic heartbeat (Fast DDS: every 3 s), so the last counted
# frames would otherwise test the end of a stream, not delivery. The node's counters include
# these frames; the per-frame fields do not.
TRAILING_S = 1.0
_NODE_COUNTERS = ("received", "processed", "dropped", "skipped_no_subscribers", "depth_matched",
                  "depth_unmatched", "depth_late", "depth_unused",
                  # a model with the depth region stage (`--model rgbd`): what it did per frame
                  "depth_regions_lifted", "depth_regions_no_segment", "depth_regions_no_ground",
                  "depth_regions_no_depth", "depth_regions_bad_depth")
_NODE_TIMINGS = ("processing_ms_p50", "obstacles3d_ms_p50")


def _since(now: Optional[str], before: Optional[str]) -> Optional[str]:
    """A node counter since the warm-up (the counted frames and the trailing second); timings as
    reported."""
    if now is None or before is None or not now.isdigit() or not before.isdigit():
        return now
    return str(int(now) - int(before))


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
    p.add_argument("--depth", help="an RGB-D camera: depth encodings to run, e.g. 16UC1,32FC1")
    p.add_argument("--json", action="store_true", help="one JSON object per setting instead of a table")
    p.add_argument("--model", help="the --depth runs' model (the launch's model:=); default: the shipped default")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                   help="a node parameter for the --depth runs (repeatable), e.g. qos_depth=5")
    a = p.parse_args()
    rclpy.init()
    settings = [(int(w), int(h), float(rate)) for size, rate in (x.split("@") for x in a.settings.split(","))
                for w, h in [size.split("x")]]
    if a.depth:
        if not a.json:
            print("| camera | rate | depth | sent | heatmaps | clouds on the depth | 3D latency p50 / p95 ms |")
            print("|---|---|---|---|---|---|---|")
        for w, h, rate in settings:
            for encoding in a.depth.split(","):
                r = run_depth_setting(w, h, rate, encoding, a.frames, a.node_profile,
                                      dict(kv.split("=", 1) for kv in a.node_param), a.model)
                print(json.dumps(r) if a.json else
                      f"| {r['size']} | {r['rate']:g} Hz | {encoding} | {r['sent']} | {r['heatmaps']} | "
                      f"{r['clouds_on_depth']} ({100 * r['clouds_on_depth'] / r['sent']:.0f} %) | "
                      f"{r['latency_3d_ms_p50']:.0f} / {r['latency_3d_ms_p95']:.0f} |", flush=True)
        rclpy.shutdown()
        return 0
    print("| camera | rate | camera QoS | sent | received by the node | answered |")
    print("|---|---|---|---|---|---|")
    for w, h, rate in settings:
        for reliable in ((True,) if a.reliable_reader else (True, False)):  # reliable readers: reliable cameras only
            r = run_setting(w, h, rate, reliable, a.frames, a.node_profile, a.compressed, a.reliable_reader)
            print(f"| {r['size']} | {r['rate']:g} Hz | {r['qos']} | {r['sent']} | {r['received']} "
                  f"({100 * r['received'] / r['sent']:.0f} %) | {r['answered']} ({100 * r['answered'] / r['sent']:.0f} %) |",
                  flush=True)
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
