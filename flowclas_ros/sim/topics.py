"""How the benchmark's frames look on the wire: topic names, TF frame and message stamps.

Why this exists: the rosbag writer, the frame metadata (each frame records its stamp), the
``sim`` CLI help and the replay tests must agree on these values, and none of them should have
to import the renderer or rosbags to learn them.
"""

from __future__ import annotations

__all__ = ["CAMERA_INFO_TOPIC", "DEPTH_TOPIC", "FRAME_ID", "GT_TOPIC", "IMAGE_TOPIC", "frame_stamp_ns"]

IMAGE_TOPIC = "/camera/image_raw"
GT_TOPIC = "/camera/anomaly_gt"
DEPTH_TOPIC = "/camera/depth/image_raw"  # 32FC1 metres, aligned to the image (same camera)
CAMERA_INFO_TOPIC = "/camera/camera_info"
FRAME_ID = "camera_optical_frame"
_STAMP_EPOCH_NS = 1_700_000_000 * 10**9  # 10 Hz from a fixed epoch: stamps are reproducible
_STAMP_PERIOD_NS = 100_000_000


def frame_stamp_ns(index: int) -> int:
    """The stamp of frame ``index`` of a split: 10 Hz from a fixed epoch, so bags are reproducible."""
    return _STAMP_EPOCH_NS + index * _STAMP_PERIOD_NS
