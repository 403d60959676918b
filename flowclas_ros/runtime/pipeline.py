"""One frame through the whole product path: decode/convert -> Detector -> optional overlay.

The node and the replay tool both call `run_frame`, so a recorded frame gives the same heatmap,
mask and overlay offline as it did (or would) on the robot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from flowclas_ros.runtime.detector import Detection, Detector
from flowclas_ros.runtime.images import decode_compressed, image_from_fields, to_rgb8
from flowclas_ros.runtime.node_interface import default
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics
from flowclas_ros.runtime.visualize import render_overlay


@dataclass
class FrameOutput:
    rgb: np.ndarray  # the frame as HxWx3 uint8 RGB
    detection: Detection
    overlay: Optional[np.ndarray]  # bgr8, when asked for


def decode_image_fields(data, height: int, width: int, encoding: str, step: int,
                        is_bigendian: bool = False) -> np.ndarray:
    """sensor_msgs/Image fields -> HxWx3 RGB (ImageError on a bad frame)."""
    return to_rgb8(image_from_fields(data, height, width, encoding, step, is_bigendian), encoding)


def decode_compressed_frame(data, fmt: str) -> np.ndarray:
    """sensor_msgs/CompressedImage fields -> HxWx3 RGB (ImageError on corrupt bytes)."""
    array, encoding = decode_compressed(bytes(data), fmt)
    return to_rgb8(array, encoding)


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message (rclpy or rosbags), in nanoseconds: the key that ties every
    output, ground truth and latency figure to its input frame."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def run_frame(detector: Detector, rgb: np.ndarray, overlay_alpha: float = default("overlay_alpha"),
              overlay: bool = True, depth_m: Optional[np.ndarray] = None,
              intrinsics: Optional[CameraIntrinsics] = None) -> FrameOutput:
    """``depth_m`` / ``intrinsics``: the frame's aligned depth (metres, NaN = no reading) and the
    colour camera's intrinsics, for the depth region stage of a model that carries one."""
    det = detector.detect(rgb, "rgb8", depth_m, intrinsics)
    ov = render_overlay(rgb, det.heatmap, det.mask, detector.threshold, overlay_alpha) if overlay else None
    return FrameOutput(rgb, det, ov)
