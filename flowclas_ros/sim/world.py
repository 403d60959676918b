"""The PyBullet client every benchmark frame and cut-out is rendered in (one per world and process).

Why this exists: real road-anomaly benchmarks cannot be downloaded here, so the project renders
its own with a third-party simulator, following /work/shared/reference/sim-benchmark.md. This
module owns everything that talks to pybullet: the asset catalogue (``plane.urdf`` +
``samurai.urdf`` as the static courtyard (other worlds bring their own static scene, see
sim/planetary.py); table, tray, kiva shelf and r2d2 as known inlier
objects; ``random_urdfs/500..999`` reserved for val/test anomalies and ``000..499`` for the
outlier-exposure bank), asset bounds, free-floor ray tests, TinyRenderer rendering with a
segmentation buffer, and the one client per process. The renderer is history-free (per-frame
bodies are removed newest first, so body ids are reused), which is what lets a frame depend only
on what the scene code draws for it.

pybullet is imported lazily, on the first world a process builds, so importing this module stays
cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from flowclas_ros.sim.camera import Camera

__all__ = ["ANOMALY_OBJECTS", "KNOWN_OBJECTS", "OE_OBJECTS", "RESERVED_OBJECTS"]

ANOMALY_OBJECTS = range(500, 1000)  # random_urdfs reserved for val/test anomalies
OE_OBJECTS = range(0, 500)  # random_urdfs reserved for outlier exposure

_RAY_TOP = 3.0  # footprint rays start this high (above the tallest object)


@dataclass(frozen=True)
class _Asset:
    """A loadable pybullet_data object; ``base_z`` None means 'drop it onto the floor'."""

    name: str  # as reported in metadata
    path: str  # relative to pybullet_data
    base_z: float | None = None


KNOWN_OBJECTS: tuple[_Asset, ...] = (
    _Asset("table/table.urdf", "table/table.urdf", 0.0),
    _Asset("tray/traybox.urdf", "tray/traybox.urdf", 0.0),
    _Asset("kiva_shelf/model.sdf", "kiva_shelf/model.sdf", 0.0),
    _Asset("r2d2.urdf", "r2d2.urdf", 0.5),
)


# Named pybullet_data objects the benchmark never trains or pastes: the generalisation split's
# obstacles (sim-benchmark.md: ducks, teddies, balls, mugs, lego, jenga, cubes, spheres).
RESERVED_OBJECTS: tuple[_Asset, ...] = (
    _Asset("duck_vhacd.urdf", "duck_vhacd.urdf"),
    _Asset("teddy_vhacd.urdf", "teddy_vhacd.urdf"),
    _Asset("soccerball.urdf", "soccerball.urdf"),
    _Asset("objects/mug.urdf", "objects/mug.urdf"),
    _Asset("lego/lego.urdf", "lego/lego.urdf"),
    _Asset("jenga/jenga.urdf", "jenga/jenga.urdf"),
    _Asset("cube.urdf", "cube.urdf"),
    _Asset("sphere2red.urdf", "sphere2red.urdf"),
    _Asset("sphere2.urdf", "sphere2.urdf"),
)


def _random_urdf(number: int) -> _Asset:
    return _Asset(f"random_urdfs/{number:03d}", f"random_urdfs/{number:03d}/{number:03d}.urdf")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """pybullet's loaders printf chatter ('argv[0]=', '?') to fd 1; keep it out of our stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers would otherwise flush after the restore
        os.dup2(saved, 1)
        os.close(saved)


def _courtyard(world: _World) -> int:
    """The courtyard's static scene (plane + monastery); returns the ground body."""
    plane = world.client.loadURDF("plane.urdf")
    world.client.loadURDF("samurai.urdf")
    return plane


StaticScene = Callable[["_World"], int]  # loads a world's static bodies, returns the ground's id


class _World:
    """One pybullet DIRECT client per world and process: the static scene is loaded once,
    per-frame bodies are added and removed (body ids are reused, so ids and
    renders do not depend on what was rendered before)."""

    def __init__(self, static_scene: StaticScene = _courtyard) -> None:
        import pybullet
        import pybullet_data
        from pybullet_utils.bullet_client import BulletClient

        self.pb = pybullet
        self.render_options: dict[str, Any] = {}  # extra getCameraImage arguments a world sets
        self._bodies: list[int] = []
        self._bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with _quiet_stdout():
            self.client = BulletClient(connection_mode=pybullet.DIRECT)
            self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
            self.plane = static_scene(self)

    def _load(self, path: str, position: np.ndarray, yaw: float, scale: float) -> int:
        orientation = self.pb.getQuaternionFromEuler((0.0, 0.0, yaw))
        with _quiet_stdout():
            if path.endswith(".sdf"):
                body = self.client.loadSDF(path, globalScaling=scale)[0]
                self.client.resetBasePositionAndOrientation(body, position.tolist(), orientation)
                return body
            return self.client.loadURDF(path, position.tolist(), orientation, globalScaling=scale)

    def bounds(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """The asset's AABB at scale 1 and zero pose, in its base frame (cached per process).

        Single-link meshes use their exact vertices (bullet's AABB adds a collision
        margin that would make dropped objects float); multi-link or primitive
        assets use the union of their links' AABBs.
        """
        if path not in self._bounds:
            body = self._load(path, np.zeros(3), 0.0, 1.0)
            with _quiet_stdout():  # getMeshData prints '?' for primitive shapes
                count, vertices = self.client.getMeshData(body)
            if count and self.client.getNumJoints(body) == 0:
                points = np.asarray(vertices, dtype=np.float64)
            else:
                links = range(-1, self.client.getNumJoints(body))
                points = np.array([corner for link in links for corner in self.client.getAABB(body, link)])
            self.client.removeBody(body)
            self._bounds[path] = (points.min(axis=0), points.max(axis=0))
        return self._bounds[path]

    def add(self, path: str, position: np.ndarray, yaw: float, scale: float) -> int:
        body = self._load(path, position, yaw, scale)
        self._bodies.append(body)
        return body

    def add_shape(self, visual: int, collision: int, position: np.ndarray, yaw: float,
                  rgba: tuple[float, float, float, float]) -> int:
        """A static per-frame body from shapes the world created once (e.g. procedural rocks)."""
        orientation = self.pb.getQuaternionFromEuler((0.0, 0.0, yaw))
        body = self.client.createMultiBody(0.0, collision, visual, position.tolist(), orientation)
        self.client.changeVisualShape(body, -1, rgbaColor=list(rgba))
        self._bodies.append(body)
        return body

    def recolour(self, body: int, rgba: tuple[float, float, float, float]) -> None:
        """Paint every link of ``body`` one colour, texture removed (low-contrast obstacles)."""
        for link in range(-1, self.client.getNumJoints(body)):
            self.client.changeVisualShape(body, link, rgbaColor=list(rgba), textureUniqueId=-1)

    def clear(self) -> None:
        """Remove every per-frame body, newest first, so the freed ids are reused in order."""
        while self._bodies:
            self.client.removeBody(self._bodies.pop())

    def floor_free(self, centre: np.ndarray, radius: float) -> bool:
        """True when vertical rays over a disc first hit the plane: bare floor, no platform, no object."""
        angles = np.arange(8) * (math.pi / 4)
        ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        xy = np.vstack([centre[None, :2], centre[:2] + radius * ring, centre[:2] + 0.5 * radius * ring])
        starts = [[x, y, _RAY_TOP] for x, y in xy]
        ends = [[x, y, -0.1] for x, y in xy]
        return all(hit[0] == self.plane for hit in self.client.rayTestBatch(starts, ends))

    def render(self, camera: Camera, light: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """RGB (HxWx3 uint8) and per-pixel body ids (-1 = nothing) from TinyRenderer."""
        rgb, body_ids, _ = self.render_with_depth(camera, light)
        return rgb, body_ids

    def render_with_depth(self, camera: Camera, light: list[float]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB, body ids and z-depth (HxW float32 metres along the optical axis, +inf where
        nothing was drawn: the sky), as an aligned depth camera gives it (REP 118)."""
        target = np.add(camera.eye, camera.forward).tolist()
        view = self.client.computeViewMatrix(list(camera.eye), target, [0.0, 0.0, 1.0])
        aspect = camera.width / camera.height
        projection = self.client.computeProjectionMatrixFOV(camera.vfov_deg, aspect, camera.near, camera.far)
        _, _, rgba, depth, seg = self.client.getCameraImage(
            camera.width,
            camera.height,
            view,
            projection,
            lightDirection=light,
            renderer=self.pb.ER_TINY_RENDERER,
            flags=self.pb.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            **self.render_options,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)
        seg = np.asarray(seg, dtype=np.int32).reshape(camera.height, camera.width)
        body_ids = np.where(seg < 0, -1, seg & 0xFFFFFF)  # link index lives in the top byte
        buffer = np.asarray(depth, dtype=np.float64).reshape(camera.height, camera.width)
        n, f = camera.near, camera.far  # the OpenGL depth buffer is non-linear in z
        z = (f * n / (f - (f - n) * buffer)).astype(np.float32)
        z[(buffer >= 1.0) | (seg < 0)] = np.inf
        return np.ascontiguousarray(rgba[..., :3]), body_ids, z


_WORLDS: dict[str, _World] = {}


def _world(name: str = "courtyard", static_scene: StaticScene = _courtyard) -> _World:
    """The process's client of world ``name``, created on first use (in a worker: in that worker)."""
    if name not in _WORLDS:
        _WORLDS[name] = _World(static_scene)
    return _WORLDS[name]
