"""numpy / runtime plain data -> ROS messages for publishing; no cv_bridge needed (decoding is
runtime.pipeline, the 3D maths and message contents runtime.obstacles3d)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from flowclas_ros.runtime.images import image_msg_fields
from flowclas_ros.runtime.obstacles3d import MarkerSpec, cloud_msg_fields, split_seconds


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Image message with the given header (the input's: stamp AND frame_id). The payload is
    assigned as bytes: assigning an ndarray costs ~50 ms per 640x480 frame in rclpy."""
    return Image(header=header, **image_msg_fields(array, encoding))


def cloud_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """PointCloud2 (x, y, z, score float32) of N x 4 points with the colour frame's header."""
    f = cloud_msg_fields(points)
    fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in f.pop("fields")]
    return PointCloud2(header=header, fields=fields, **f)


def marker_array_msg(specs: Sequence[MarkerSpec], header: Header) -> MarkerArray:
    """MarkerArray of the runtime's marker contents, every marker with ``header``."""
    markers = []
    for s in specs:
        sec, nanosec = split_seconds(s.lifetime_s)
        markers.append(Marker(
            header=header, ns=s.ns, id=s.id, type=s.type, action=s.action,
            pose=Pose(position=Point(x=s.position[0], y=s.position[1], z=s.position[2]),
                      orientation=Quaternion(w=1.0)),
            scale=Vector3(x=s.scale[0], y=s.scale[1], z=s.scale[2]),
            color=ColorRGBA(r=s.rgba[0], g=s.rgba[1], b=s.rgba[2], a=s.rgba[3]),
            lifetime=Duration(sec=sec, nanosec=nanosec), text=s.text))
    return MarkerArray(markers=markers)
