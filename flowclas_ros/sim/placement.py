"""Putting an object on free ground in front of a camera: the rejection sampler every world uses.

Why this exists: each world has its own content rules (what stands where, how far, how big), but
they all place objects the same way: a pose drawn ahead of the camera, accepted only when the
object is in view and vertical rays over its footprint reach the ground first (nothing buried in
a building, nothing pushed into another object).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flowclas_ros.sim.camera import Camera, _unit
from flowclas_ros.sim.world import _Asset, _World

__all__ = ["box_corners", "try_place", "yaw_matrix"]

PLACE_TRIES = 40  # positions tried per object
CLEARANCE = 0.05  # metres kept free around each footprint


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def sample_range(rng: np.random.Generator, distance: tuple[float, float], log_uniform: bool) -> float:
    """A distance in ``distance``; log-uniform gives far objects as many draws per octave as near ones."""
    if log_uniform:
        return float(math.exp(rng.uniform(math.log(distance[0]), math.log(distance[1]))))
    return float(rng.uniform(*distance))


def try_place(
    world: _World,
    camera: Camera,
    rng: np.random.Generator,
    asset: _Asset,
    scale: float,
    distance: tuple[float, float],
    whole_in_view: bool,
    log_uniform: bool = False,
) -> dict[str, Any] | None:
    """Put ``asset`` on free floor ``distance`` m ahead of the camera; None if no try fits.

    ``whole_in_view`` demands all AABB corners in the image (anomalies), else its centre (known objects).
    """
    lo, hi = (b * scale for b in world.bounds(asset.path))
    centre_local = (lo + hi) / 2
    radius = float(np.hypot(*(hi - lo)[:2])) / 2 + CLEARANCE
    base_z = -lo[2] if asset.base_z is None else asset.base_z
    camera_yaw = math.radians(camera.yaw_deg)
    for _ in range(PLACE_TRIES):
        range_m = sample_range(rng, distance, log_uniform)
        bearing = camera_yaw + rng.uniform(-1.0, 1.0) * camera.half_hfov
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        centre = np.array([camera.eye[0], camera.eye[1], 0.0]) + range_m * _unit(bearing, 0.0)
        rotation = yaw_matrix(yaw)
        base = centre - rotation @ centre_local
        base[2] = base_z
        corners = box_corners(lo, hi) @ rotation.T + base
        if not camera.sees(corners if whole_in_view else corners.mean(axis=0)):
            continue
        if not world.floor_free(centre, radius):
            continue
        return {
            "name": asset.name,
            "body": world.add(asset.path, base, yaw, scale),
            "position": [round(float(v), 6) for v in base],
            "yaw_deg": round(math.degrees(yaw), 4),
            "scale": round(scale, 6),
            "size_m": round(float((hi - lo).max()), 4),
            # the object's box in the world (its own AABB turned by yaw_deg): where its points lie
            "box_centre_m": [round(float(v), 6) for v in corners.mean(axis=0)],
            "box_size_m": [round(float(v), 6) for v in hi - lo],
            "distance_m": round(float(range_m), 4),
        }
    return None
