"""The benchmark camera and the random draws of camera pose and sun direction.

Why this exists: the pinhole maths (projection, field of view, the pose recorded in each
frame's metadata) and the ranges cameras and lights are drawn from are pure numpy; keeping them
apart from the PyBullet world lets placement test visibility, and metadata describe a view,
without a physics client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowclas_ros.runtime.obstacles3d import CameraIntrinsics

__all__ = ["FAR", "HEIGHT", "NEAR", "VFOV_DEG", "WIDTH", "Camera"]

WIDTH, HEIGHT = 640, 480
VFOV_DEG = 60.0
NEAR, FAR = 0.05, 120.0

_CAMERA_XY = (-5.0, 5.0)
_CAMERA_HEIGHT = (0.5, 1.4)
_CAMERA_PITCH_DEG = (-25.0, -6.0)
_LIGHT_ELEVATION_DEG = (20.0, 80.0)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking along ``forward`` with world +z up (pybullet conventions)."""

    eye: tuple[float, float, float]
    forward: tuple[float, float, float]  # unit vector
    vfov_deg: float = VFOV_DEG
    width: int = WIDTH
    height: int = HEIGHT
    near: float = NEAR
    far: float = FAR

    @classmethod
    def from_yaw_pitch(cls, eye: tuple[float, float, float], yaw_deg: float, pitch_deg: float,
                       vfov_deg: float = VFOV_DEG) -> Camera:
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        forward = (math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch))
        return cls(eye, forward, vfov_deg)

    @property
    def focal_px(self) -> float:
        return 0.5 * self.height / math.tan(math.radians(self.vfov_deg) / 2)

    @property
    def half_hfov(self) -> float:
        """Half the horizontal field of view, radians."""
        return math.atan(0.5 * self.width / self.focal_px)

    @property
    def yaw_deg(self) -> float:
        return math.degrees(math.atan2(self.forward[1], self.forward[0]))

    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        forward = np.asarray(self.forward)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        right /= np.linalg.norm(right)
        return forward, right, np.cross(right, forward)

    def sees(self, points: np.ndarray) -> bool:
        """True when every world point (N x 3) projects inside the image, in front of the near plane."""
        forward, right, up = self._basis()
        rel = np.atleast_2d(points) - np.asarray(self.eye)
        depth = rel @ forward
        if np.any(depth <= self.near) or np.any(depth >= self.far):
            return False
        col = 0.5 * self.width + self.focal_px * (rel @ right) / depth
        row = 0.5 * self.height - self.focal_px * (rel @ up) / depth
        return bool(np.all((col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)))

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Camera:
        """The camera a frame's ``camera`` metadata describes (pose rounded as stored)."""
        cam = cls.from_yaw_pitch(tuple(meta["position"]), meta["yaw_deg"], meta["pitch_deg"])
        return cls(cam.eye, cam.forward, meta["vfov_deg"], meta["width"], meta["height"],
                   meta["near"], meta["far"])

    def intrinsics(self) -> CameraIntrinsics:
        """K as a ROS CameraInfo states it: pixel (u, v) is the centre of column u, row v, so
        the image centre, at width / 2 in the renderer's pixel-edge coordinates, is at
        (width - 1) / 2."""
        f = self.focal_px
        return CameraIntrinsics(f, f, (self.width - 1) / 2, (self.height - 1) / 2, self.width, self.height)

    def metadata(self) -> dict[str, Any]:
        """Pose and intrinsics, so a frame can be re-rendered or its pixels back-projected."""
        return {
            "position": [round(v, 6) for v in self.eye],
            "yaw_deg": round(self.yaw_deg, 4),
            "pitch_deg": round(math.degrees(math.asin(self.forward[2])), 4),
            "vfov_deg": self.vfov_deg,
            "width": self.width,
            "height": self.height,
            "near": self.near,
            "far": self.far,
            "fx": self.focal_px,
            "fy": self.focal_px,
            "cx": self.width / 2,
            "cy": self.height / 2,
        }


def _sample_camera(rng: np.random.Generator, xy: tuple[float, float] = _CAMERA_XY,
                   height: tuple[float, float] = _CAMERA_HEIGHT,
                   pitch_deg: tuple[float, float] = _CAMERA_PITCH_DEG, vfov_deg: float = VFOV_DEG) -> Camera:
    """A camera at x, y in ``xy``, ``height`` m up, any yaw, pitched within ``pitch_deg``, with a
    ``vfov_deg`` lens (a world's ranges)."""
    eye = (float(rng.uniform(*xy)), float(rng.uniform(*xy)), float(rng.uniform(*height)))
    return Camera.from_yaw_pitch(eye, float(rng.uniform(0.0, 360.0)), float(rng.uniform(*pitch_deg)), vfov_deg)


def _unit(azimuth: float, elevation: float) -> np.ndarray:
    return np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def _sample_light(rng: np.random.Generator,
                  elevation_deg: tuple[float, float] = _LIGHT_ELEVATION_DEG) -> list[float]:
    """A direction towards the sun, ``elevation_deg`` above the horizon, from any azimuth."""
    azimuth = rng.uniform(0.0, 2 * math.pi)
    elevation = math.radians(rng.uniform(*elevation_deg))
    return [round(float(v), 6) for v in _unit(azimuth, elevation)]
