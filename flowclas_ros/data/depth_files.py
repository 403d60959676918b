"""Aligned depth in the generic layout: ``depth/{id}.png`` and one ``camera_info.yaml`` per dataset.

Why: a stage that uses depth must be measured offline on the same inputs the node gets on the
robot (an aligned 16UC1 depth image in millimetres, 0 = no reading, and the colour camera's
CameraInfo). A dataset folder holds them the way a ROS user already has them: the depth images
beside ``images/`` and the camera's calibration in the ``camera_calibration_parsers`` YAML format
(``image_width``, ``image_height``, ``camera_matrix: {rows: 3, cols: 3, data: [9 numbers]}``),
which is what ``camera_calibration`` writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from flowclas_ros.data.bounded_yaml import YamlLimitError, read_yaml_file
from flowclas_ros.data.files import DatasetError, PathLike, decode_file
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, DepthError, depth_to_metres

DEPTH_DIR = "depth"
CAMERA_INFO_FILE = "camera_info.yaml"
MAX_CAMERA_INFO_BYTES = 64 << 10


def depth_path(root: PathLike, sample_id: str) -> Path:
    return Path(root) / DEPTH_DIR / f"{sample_id}.png"


def write_depth(root: PathLike, sample_id: str, depth_mm: np.ndarray) -> None:
    """Write one 16UC1 depth image (millimetres, 0 = no reading) as a 16-bit PNG."""
    if depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise DatasetError(f"depth for {sample_id!r} must be HxW uint16 millimetres, got "
                           f"{depth_mm.dtype} {depth_mm.shape}")
    path = depth_path(root, sample_id)
    ok, encoded = cv2.imencode(".png", depth_mm)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)


def read_depth_m(path: PathLike, shape: tuple[int, int]) -> np.ndarray:
    """HxW float32 metres (NaN = no reading) of a 16-bit depth PNG that must match ``shape`` (the
    colour image's HxW): depth aligned to colour, nothing else."""
    raw = decode_file(path, cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"depth image {path} must be a single-channel 16-bit PNG (millimetres), "
                           f"got {raw.dtype} with shape {raw.shape}")
    if raw.shape != tuple(shape):
        raise DatasetError(f"depth image {path} is {raw.shape[1]}x{raw.shape[0]}, its colour image "
                           f"{shape[1]}x{shape[0]}: depth must be aligned to the colour camera")
    return depth_to_metres(raw, "16UC1")


def camera_info_yaml(intrinsics: CameraIntrinsics) -> dict[str, Any]:
    k = intrinsics
    return {"image_width": k.width, "image_height": k.height,
            "camera_matrix": {"rows": 3, "cols": 3, "data": [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]}}


def write_camera_info(root: PathLike, intrinsics: CameraIntrinsics) -> None:
    import yaml

    path = Path(root) / CAMERA_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(camera_info_yaml(intrinsics), sort_keys=False), encoding="utf-8")


def read_camera_info(root: PathLike) -> Optional[CameraIntrinsics]:
    """The dataset's colour-camera intrinsics, or None when it has no ``camera_info.yaml``."""
    path = Path(root) / CAMERA_INFO_FILE
    if not path.is_file():
        return None
    try:
        data = read_yaml_file(path, MAX_CAMERA_INFO_BYTES, "camera info")
    except YamlLimitError as exc:
        raise DatasetError(str(exc)) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping (camera_calibration_parsers format)")
    try:
        matrix = data["camera_matrix"]
        values = matrix["data"] if isinstance(matrix, dict) else None
        if not isinstance(values, list):
            raise DatasetError(f"{path}: camera_matrix.data must be a list of 9 numbers")
        width, height = data["image_width"], data["image_height"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise DatasetError(f"{path}: image_width and image_height must be integers")
        return CameraIntrinsics.from_k(values, width, height)
    except KeyError as exc:
        raise DatasetError(f"{path}: missing key {exc.args[0]!r}") from exc
    except (TypeError, ValueError, DepthError) as exc:
        raise DatasetError(f"{path}: {exc}") from exc
