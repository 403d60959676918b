"""sensor_msgs <-> numpy through runtime.images (validation included); no cv_bridge needed."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..runtime.images import decode_compressed, image_from_fields, to_msg_fields


def image_msg_to_array(msg: Image) -> tuple[np.ndarray, str]:
    """(array view, encoding); raises ImageError (with a diagnostics `kind`) on a bad frame."""
    arr = image_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                            bool(msg.is_bigendian))
    return arr, msg.encoding


def compressed_msg_to_array(msg: CompressedImage) -> tuple[np.ndarray, str]:
    return decode_compressed(bytes(msg.data), msg.format)


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Image message with the given header (the input's: stamp AND frame_id). The payload is
    assigned as bytes: assigning an ndarray costs ~50 ms per 640x480 frame in rclpy."""
    data, step = to_msg_fields(array, encoding)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg
