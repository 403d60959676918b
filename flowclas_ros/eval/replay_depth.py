"""A replayed frame's aligned depth for the depth region stage: the replay's side of what the node
does with `DepthOutputs.depth_for`.

Why: a bag writes a frame's depth beside its image, often after it; the node runs the stage on the
frames whose depth is already there when they are processed, the replay holds one image until its
depth (and a CameraInfo) has come, or until the next image comes (that frame then goes on without
the stage, as on a robot whose depth came late). Only used when the model carries the stage and the
bag has a depth topic; otherwise frames go through at once, exactly as before.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import numpy as np

from flowclas_ros.runtime.images import ImageError
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, DepthError, check_sizes, depth_and_intrinsics
from flowclas_ros.runtime.pipeline import stamp_ns

MAX_CACHED_DEPTH = 8  # depth messages that came before their image, newest kept


class ReplayDepth:
    """Depth and CameraInfo messages of a replay, keyed by stamp, bounded."""

    def __init__(self, depth_scale: float) -> None:
        self.depth_scale = depth_scale
        self._depth: OrderedDict[int, Any] = OrderedDict()
        self._info: Optional[Any] = None

    def add_depth(self, msg: Any) -> None:
        self._depth[stamp_ns(msg)] = msg
        while len(self._depth) > MAX_CACHED_DEPTH:
            self._depth.popitem(last=False)

    def add_info(self, msg: Any) -> None:
        self._info = msg  # intrinsics do not change per frame: the latest is used

    def ready(self, stamp: int) -> bool:
        """Whether a frame of this stamp can have the stage now."""
        return self._info is not None and stamp in self._depth

    def take(self, stamp: int, shape: tuple[int, ...]
             ) -> tuple[Optional[np.ndarray], Optional[CameraIntrinsics], Optional[str]]:
        """(depth metres, intrinsics, None) for the frame, or (None, None, why not): "no_depth"
        when its depth has not come, "bad_depth" when it cannot be used (the 3D outputs count
        the problem itself)."""
        msg = self._depth.pop(stamp, None)
        if msg is None or self._info is None:
            return None, None, "no_depth"
        try:
            depth_m, intrinsics = depth_and_intrinsics(msg, self._info, self.depth_scale)
            check_sizes(depth_m, intrinsics, shape)
        except (DepthError, ImageError):
            return None, None, "bad_depth"
        return depth_m, intrinsics, None
