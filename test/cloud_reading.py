"""Reading the package's PointCloud2 clouds back in tests: the inverse of
runtime.obstacles3d.cloud_msg_fields (x, y, z, score as little-endian float32)."""
from __future__ import annotations

import numpy as np

from flowclas_ros.runtime.obstacles3d import POINT_FIELDS, POINT_STEP


def cloud_points(data: bytes | bytearray | memoryview, width: int, height: int = 1) -> np.ndarray:
    """PointCloud2 data in POINT_FIELDS layout -> N x 4 float32."""
    assert POINT_STEP == 4 * len(POINT_FIELDS)
    return np.frombuffer(bytes(data), dtype="<f4").reshape(width * height, len(POINT_FIELDS))
