"""The detector node's public interface: its name, topics, encodings, the shipped models' role
names, the domain-shift alarm's levels and the parameters with their defaults.

Plain data with no ROS import, so the node (ros/), the replay tool (which writes the topics the node
would have published, with the node's defaults), the launch file, config/detector.yaml (generated
from this file: `flowclas-ros node-params --out config/detector.yaml`), the docs and the tests all
read the one copy. Topic names are relative to the node: a namespace `ns` gives
`/ns/flowclas_detector/...` for the private outputs and `/ns/image` for the input.
"""
from __future__ import annotations

from typing import Any, Optional

NODE_NAME = "flowclas_detector"
INPUT_TOPIC = "image"  # sensor_msgs/Image (input_transport raw)
COMPRESSED_INPUT_TOPIC = "image/compressed"  # sensor_msgs/CompressedImage (input_transport compressed)
DEPTH_TOPIC = "depth/image"  # sensor_msgs/Image 16UC1 (mm) or 32FC1 (m), aligned to the colour frame
CAMERA_INFO_TOPIC = "camera_info"  # sensor_msgs/CameraInfo of the colour camera
DIAGNOSTICS_TOPIC = "/diagnostics"
OUTPUTS: tuple[tuple[str, str, str], ...] = (  # (key, private topic name, encoding)
    ("heatmap", "anomaly_heatmap", "32FC1"),
    ("mask", "obstacle_mask", "mono8"),
    ("overlay", "overlay", "bgr8"),
)
# The 3D outputs (use_depth): (key, private topic name, message type)
OUTPUTS_3D: tuple[tuple[str, str, str], ...] = (
    ("points", "obstacle_points", "sensor_msgs/msg/PointCloud2"),
    ("markers", "obstacles", "visualization_msgs/msg/MarkerArray"),
)

# The shipped models by role: `model_path`, the launch argument `model:=` and every `--model` take
# these names as well as file names. role: (shipped file, what it is for)
MODEL_ROLES: dict[str, tuple[str, str]] = {
    "fast": ("flowclas_default.onnx", "the default: courtyard world, stride-8 feature grid, real time"),
    "accurate": ("flowclas_accurate.onnx", "courtyard world, stride-4 grid: small and far obstacles, "
                 "at about half the frame rate"),
    "planetary": ("flowclas_planetary.onnx", "planetary world (trained from its logs), stride 8"),
    "planetary_accurate": ("flowclas_planetary_accurate.onnx", "planetary world, stride 4"),
    "rgbd": ("flowclas_rgbd.onnx", "courtyard world with an aligned depth camera (use_depth): `fast` "
             "plus the depth region stage, whole obstacles from depth; at least 15 Hz"),
}
DEFAULT_ROLE = "fast"

# The domain-shift alarm (runtime/scene_alarm.py) averages the share of flagged pixels over this
# many frames; its WARN and ERROR levels are the parameters scene_warn_share / scene_error_share.
SCENE_WINDOW_FRAMES = 30

# name: (default, description, read_only, range)  -- the single source of the node's parameters
PARAMETERS: dict[str, tuple[Any, str, bool, Optional[tuple]]] = {
    "model_path": ("", "ONNX model file; empty = the shipped default model; a bare name "
                   "(flowclas_default_int8.onnx) = that shipped model; "
                   f"{', '.join(MODEL_ROLES)} = the shipped model of that role", True, None),
    "providers": (["cpu"], "execution provider preference, e.g. [tensorrt, cuda, cpu]", True, None),
    "intra_op_threads": (0, "ONNX Runtime CPU threads; 0 = all cores", True, (0, 256)),
    "intra_op_spinning": (True, "ONNX Runtime threads busy-wait: lower latency, more CPU", True, None),
    "threshold": (-1.0, "obstacle score threshold; negative = the model's calibrated one", False, None),
    "min_obstacle_area": (50, "drop obstacle components smaller than this many pixels", False, (0, 100_000_000)),
    "overlay_alpha": (0.45, "opacity of the score colour map in the overlay", False, (0.0, 1.0)),
    "publish_heatmap": (True, "publish ~/anomaly_heatmap (32FC1)", True, None),
    "publish_mask": (True, "publish ~/obstacle_mask (mono8 0/255)", True, None),
    "publish_overlay": (True, "publish ~/overlay (bgr8)", True, None),
    "input_transport": ("raw", "raw: subscribe `image` (Image); compressed: `image/compressed`", True, None),
    "qos_depth": (5, "subscription queue depth (keep last): a reliable camera's frames held back "
                  "behind a repaired one arrive together, and a depth of 1 would keep only the last",
                  True, (1, 100)),
    "input_queue": (3, "frames waiting for inference, oldest first; when full the oldest is dropped "
                    "(counted): 1 = always the newest frame, lowest latency", True, (1, 30)),
    "input_reliability": ("auto", "auto: a reliable AND a best-effort subscription, so reliable cameras "
                          "are received reliably and best-effort ones still match (frames seen twice "
                          "are taken once, by header stamp); reliable | best_effort: one subscription "
                          "of that kind, overridable with qos_overrides", True, None),
    "scene_warn_share": (0.05, "diagnostics WARN when the mean share of flagged pixels over the last "
                         f"{SCENE_WINDOW_FRAMES} frames exceeds this (the scene may be unlike the "
                         "training data)", True, (0.0, 1.0)),
    "scene_error_share": (0.2, "diagnostics ERROR above this mean flagged share: the mask is mostly "
                          "noise, retrain on this robot's logs", True, (0.0, 1.0)),
    "use_depth": (False, "subscribe `depth/image` (aligned to the colour frame) and `camera_info` and "
                  "publish ~/obstacle_points (PointCloud2) and ~/obstacles (MarkerArray)", True, None),
    "depth_scale": (0.001, "metres per unit of a 16UC1 depth image (32FC1 is in metres)", True,
                    (1e-6, 1.0)),
    "depth_sync_tolerance": (0.0, "seconds a depth stamp may differ from the colour stamp and "
                             "still match (0: the same stamp, as aligned depth has)", False, (0.0, 1.0)),
    "depth_wait": (1.0, "seconds a processed frame waits for its depth frame and a CameraInfo "
                   "(inference never waits: the 3D outputs are published when both are there); "
                   "a frame without them by then gets no 3D outputs and is counted", False, (0.0, 10.0)),
    "depth_regions_wait": (0.05, "with a model that carries the depth region stage (`rgbd`): "
                           "seconds the frame being processed waits for its depth frame and a "
                           "CameraInfo that have not arrived yet (0: never; a frame without them "
                           "goes on without the stage, counted)", False, (0.0, 0.5)),
    "depth_pending_frames": (15, "processed frames (mask + heatmap) kept waiting for their depth; "
                             "the oldest is given up (counted) when more wait", True, (1, 300)),
    "max_obstacle_points": (5000, "most points in one ~/obstacle_points cloud (evenly decimated)",
                            False, (1, 10_000_000)),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages", True, (0.05, 60.0)),
    "log_throttle_period": (5.0, "seconds between repeated log lines of one problem", True, (0.0, 3600.0)),
}


def default(name: str) -> Any:
    """A parameter's default value."""
    return PARAMETERS[name][0]


def _prefix(namespace: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}/{NODE_NAME}" if ns else f"/{NODE_NAME}"


def output_topics(namespace: str = "") -> dict[str, str]:
    """{'heatmap', 'mask', 'overlay'} -> topic, as the node names them in ``namespace``."""
    return {key: f"{_prefix(namespace)}/{name}" for key, name, _ in OUTPUTS}


def output_topics_3d(namespace: str = "") -> dict[str, str]:
    """{'points', 'markers'} -> topic of the 3D outputs, as the node names them in ``namespace``."""
    return {key: f"{_prefix(namespace)}/{name}" for key, name, _ in OUTPUTS_3D}
