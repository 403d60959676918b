"""Replay, reading: which topics of a bag are replayed, and their messages decoded.

The image topic, the ground truth, and the aligned depth + CameraInfo of the 3D outputs are
picked (or checked when named) here, once, for :func:`flowclas_ros.eval.replay.replay` and the
fleet's per-bag task alike; a bag that cannot be replayed is refused with the topics it has.
rosbags and the message decoders are imported inside the functions (the CLI parser stays fast).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["ReplayTopics", "decode_label", "label_stamps", "select_topics"]


@dataclass(frozen=True)
class ReplayTopics:
    image: str
    gt: Optional[str]
    depth: Optional[str]  # with camera_info: the 3D outputs are written
    camera_info: Optional[str]

    @property
    def extra(self) -> list[str]:
        """Topics copied to the output and used for the 3D outputs."""
        return [t for t in (self.depth, self.camera_info) if t is not None]

    @property
    def read(self) -> list[str]:
        """Every topic the replay reads, in one pass over the bag."""
        return [self.image] + ([self.gt] if self.gt else []) + self.extra


def decode_label(msg: Any) -> Any:
    """A ground-truth Image -> HxW uint8 0/1/255 (BagFrameError / ImageError / DatasetError)."""
    from flowclas_ros.data.labels import LABEL_DECODERS
    from flowclas_ros.data.rosbag import BagFrameError
    from flowclas_ros.runtime.images import image_from_fields

    if msg.encoding not in ("mono8", "8UC1"):
        raise BagFrameError("gt_encoding", f"ground truth must be mono8 (0/1/255), got {msg.encoding}")
    raw = image_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                            bool(msg.is_bigendian))
    return LABEL_DECODERS["generic"](raw.copy(), f"at stamp {msg.header.stamp.sec}."
                                     f"{msg.header.stamp.nanosec:09d}")


def _depth_topics(src: Any, depth_topic: Optional[str], camera_info_topic: Optional[str],
                  exclude: set) -> tuple[Optional[str], Optional[str]]:
    """(depth topic, CameraInfo topic) to replay the 3D outputs from, or (None, None): given ones
    are checked; otherwise the bag's only CameraInfo topic and its only Image topic with "depth"
    in its name. Naming one of them and not finding the other is an error."""
    from flowclas_ros.data.rosbag import CAMERA_INFO, IMAGE, BagError

    asked = depth_topic is not None or camera_info_topic is not None
    if depth_topic is not None:
        src.require_topic(depth_topic, types=(IMAGE,), what="depth topic")
    if camera_info_topic is not None:
        src.require_topic(camera_info_topic, types=(CAMERA_INFO,), what="CameraInfo topic")
    if depth_topic is None:
        found = [t for t, ty in src.topics.items() if ty == IMAGE and "depth" in t and t not in exclude]
        depth_topic = found[0] if len(found) == 1 else None
    if camera_info_topic is None:
        found = [t for t, ty in src.topics.items() if ty == CAMERA_INFO]
        camera_info_topic = found[0] if len(found) == 1 else None
    if depth_topic is not None and camera_info_topic is not None:
        return depth_topic, camera_info_topic
    if asked:
        raise BagError(f"3D outputs need a depth topic and a CameraInfo topic; found "
                       f"{depth_topic or 'no depth topic'} and {camera_info_topic or 'no CameraInfo'}; "
                       f"name both with --depth-topic / --camera-info-topic. Topics: {src.describe_topics()}")
    return None, None  # a bag without depth: no 3D outputs


def select_topics(src: Any, outputs: dict[str, str], image_topic: Optional[str] = None,
                  gt_topic: Optional[str] = None, depth_topic: Optional[str] = None,
                  camera_info_topic: Optional[str] = None, with_3d: bool = True) -> ReplayTopics:
    """The topics of bag ``src`` to replay (BagError naming the bag's topics when one is
    missing or ambiguous). ``outputs``: the detector's output topics, never replayed as input.
    ``with_3d=False``: no depth / CameraInfo (nothing is written, so the 3D outputs are not
    made)."""
    from flowclas_ros.data.rosbag import IMAGE, BagError

    if gt_topic is not None:
        src.require_topic(gt_topic, types=(IMAGE,), what="ground-truth topic")
    depth, info = _depth_topics(src, depth_topic, camera_info_topic,
                                exclude={gt_topic, image_topic, *outputs.values()})
    topic = src.pick_image_topic(image_topic, exclude={gt_topic, depth, *outputs.values()},
                                 how_to_choose="choose one with --image-topic")
    if topic == gt_topic:
        raise BagError(f"the image topic and the ground-truth topic are both {topic}")
    if depth is not None and topic == depth:
        raise BagError(f"the image topic and the depth topic are both {topic}")
    if set(outputs.values()) & {topic, gt_topic}:
        raise BagError(f"{topic} is a detector output topic; replay its input topic instead")
    if not with_3d:
        depth = info = None
    return ReplayTopics(topic, gt_topic, depth, info)


def label_stamps(src: Any, gt_topic: Optional[str]) -> set[int]:
    """Header stamps of the ground-truth messages: which frames will have a label, so that only
    their heatmaps are held until the label comes."""
    from flowclas_ros.data.rosbag import BagFrameError, deserialize
    from flowclas_ros.runtime.pipeline import stamp_ns

    stamps: set[int] = set()
    if gt_topic is not None:
        for m in src.messages([gt_topic]):
            with contextlib.suppress(BagFrameError):
                stamps.add(stamp_ns(deserialize(m)))
    return stamps
