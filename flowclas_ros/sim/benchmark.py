"""The PyBullet obstacle benchmark: a courtyard with pixel-exact unknown-obstacle ground truth.

Why this exists: real road-anomaly benchmarks cannot be downloaded here, so the
project renders its own end-to-end benchmark with a third-party simulator,
following /work/shared/reference/sim-benchmark.md exactly:

* world: ``plane.urdf`` + ``samurai.urdf`` at the origin; 0-3 known inlier objects
  (table, tray, kiva shelf, r2d2) per frame, 2.5-9 m ahead of a randomly posed
  camera (640x480, vertical FOV 60, TinyRenderer, random light direction);
* train frames hold no anomalies; val/test frames hold 1-3 objects from
  ``random_urdfs/500..999``, 0.2-0.8 m largest side, 1.5-7 m ahead, fully inside
  the view, resting on the floor;
* the outlier-exposure bank holds cut-outs of ``random_urdfs/000..499`` only.

Labels come from the segmentation buffer: 1 on anomaly pixels, 0 elsewhere (the
sky and the courtyard are inliers; no pixel is void). Everything a frame
contains is drawn from ``np.random.default_rng([seed, split stream, index])``,
and the renderer is history-free, so a frame's PNG bytes depend only on
(seed, split, index): not on worker count, order or what was rendered before.

Placement is rejection-sampled: an object goes where vertical rays over its
footprint reach the plane first, so nothing is buried in the monastery's
platforms or pushed into another object; a val/test camera whose anomalies
cannot all be placed is redrawn.

pybullet and rosbags are imported lazily, so importing this module (for the CLI)
stays cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.generic import write_sample
from flowclas_ros.data.outliers import Cutout, save_cutout, trim_cutout
from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID

__all__ = [
    "ANOMALY_OBJECTS",
    "FRAME_ID",
    "GT_TOPIC",
    "IMAGE_TOPIC",
    "KNOWN_OBJECTS",
    "OE_OBJECTS",
    "SPLITS",
    "Camera",
    "build_oe_bank",
    "generate_split",
    "render_cutout",
    "render_frame",
]

PathLike = str | Path
T = TypeVar("T")

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SEED_STREAMS = {"train": 0, "val": 1, "test": 2, "oe": 3}
ANOMALY_OBJECTS = range(500, 1000)  # random_urdfs reserved for val/test anomalies
OE_OBJECTS = range(0, 500)  # random_urdfs reserved for outlier exposure

WIDTH, HEIGHT = 640, 480
VFOV_DEG = 60.0
NEAR, FAR = 0.05, 120.0

_CAMERA_XY = (-5.0, 5.0)
_CAMERA_HEIGHT = (0.5, 1.4)
_CAMERA_PITCH_DEG = (-25.0, -6.0)
_LIGHT_ELEVATION_DEG = (20.0, 80.0)
_KNOWN_COUNT = (0, 3)
_KNOWN_DISTANCE = (2.5, 9.0)
_ANOMALY_COUNT = (1, 3)
_ANOMALY_DISTANCE = (1.5, 7.0)
_ANOMALY_SIZE = (0.2, 0.8)  # largest side of the AABB, metres

_PLACE_TRIES = 40  # positions tried per object
_SCENE_TRIES = 50  # cameras tried per val/test frame before giving up
_RAY_TOP = 3.0  # footprint rays start this high (above the tallest object)
_CLEARANCE = 0.05  # metres kept free around each footprint

_OE_SIZE = 256  # square cut-out render, px
_OE_VFOV_DEG = 40.0
_OE_LARGEST_SIDE = 0.5  # metres; only fixes the camera distance, the image is scale-free
_OE_ALTITUDE = 60.0  # above the monastery roofs, so nothing can occlude the object
_OE_ELEVATION_DEG = (5.0, 50.0)  # seen from slightly above, as a ground robot sees obstacles

IMAGE_TOPIC = "/camera/image_raw"
GT_TOPIC = "/camera/anomaly_gt"
FRAME_ID = "camera_optical_frame"
_STAMP_EPOCH_NS = 1_700_000_000 * 10**9  # 10 Hz from a fixed epoch: stamps are reproducible
_STAMP_PERIOD_NS = 100_000_000


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


def _random_urdf(number: int) -> _Asset:
    return _Asset(f"random_urdfs/{number:03d}", f"random_urdfs/{number:03d}/{number:03d}.urdf")


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per (seed, split, index): frames never depend on each other."""
    return np.random.default_rng([seed, _SEED_STREAMS[split], index])


# ---------------------------------------------------------------- camera


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
    def from_yaw_pitch(cls, eye: tuple[float, float, float], yaw_deg: float, pitch_deg: float) -> Camera:
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        forward = (math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch))
        return cls(eye, forward)

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


def _sample_camera(rng: np.random.Generator) -> Camera:
    eye = (float(rng.uniform(*_CAMERA_XY)), float(rng.uniform(*_CAMERA_XY)), float(rng.uniform(*_CAMERA_HEIGHT)))
    return Camera.from_yaw_pitch(eye, float(rng.uniform(0.0, 360.0)), float(rng.uniform(*_CAMERA_PITCH_DEG)))


def _unit(azimuth: float, elevation: float) -> np.ndarray:
    return np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def _sample_light(rng: np.random.Generator) -> list[float]:
    """A direction towards the sun, somewhere above the horizon."""
    azimuth = rng.uniform(0.0, 2 * math.pi)
    elevation = math.radians(rng.uniform(*_LIGHT_ELEVATION_DEG))
    return [round(float(v), 6) for v in _unit(azimuth, elevation)]


# ---------------------------------------------------------------- world


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


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


class _World:
    """One pybullet DIRECT client per process: the static courtyard is loaded once,
    per-frame bodies are added and removed (body ids are reused, so ids and
    renders do not depend on what was rendered before)."""

    def __init__(self) -> None:
        import pybullet
        import pybullet_data
        from pybullet_utils.bullet_client import BulletClient

        self.pb = pybullet
        with _quiet_stdout():
            self.client = BulletClient(connection_mode=pybullet.DIRECT)
            self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
            self.plane = self.client.loadURDF("plane.urdf")
            self.client.loadURDF("samurai.urdf")
        self._bodies: list[int] = []
        self._bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}

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
        target = np.add(camera.eye, camera.forward).tolist()
        view = self.client.computeViewMatrix(list(camera.eye), target, [0.0, 0.0, 1.0])
        aspect = camera.width / camera.height
        projection = self.client.computeProjectionMatrixFOV(camera.vfov_deg, aspect, camera.near, camera.far)
        _, _, rgba, _, seg = self.client.getCameraImage(
            camera.width,
            camera.height,
            view,
            projection,
            lightDirection=light,
            renderer=self.pb.ER_TINY_RENDERER,
            flags=self.pb.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)
        seg = np.asarray(seg, dtype=np.int32).reshape(camera.height, camera.width)
        body_ids = np.where(seg < 0, -1, seg & 0xFFFFFF)  # link index lives in the top byte
        return np.ascontiguousarray(rgba[..., :3]), body_ids


_WORLD: _World | None = None


def _world() -> _World:
    """The process's client, created on first use (in a worker: in that worker)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _World()
    return _WORLD


# ---------------------------------------------------------------- scene composition


def _try_place(
    world: _World,
    camera: Camera,
    rng: np.random.Generator,
    asset: _Asset,
    scale: float,
    distance: tuple[float, float],
    whole_in_view: bool,
) -> dict[str, Any] | None:
    """Put ``asset`` on free floor ``distance`` m ahead of the camera; None if no try fits.

    ``whole_in_view`` demands all AABB corners in the image (anomalies), else its centre (known objects).
    """
    lo, hi = (b * scale for b in world.bounds(asset.path))
    centre_local = (lo + hi) / 2
    radius = float(np.hypot(*(hi - lo)[:2])) / 2 + _CLEARANCE
    base_z = -lo[2] if asset.base_z is None else asset.base_z
    camera_yaw = math.radians(camera.yaw_deg)
    for _ in range(_PLACE_TRIES):
        range_m = rng.uniform(*distance)
        bearing = camera_yaw + rng.uniform(-1.0, 1.0) * camera.half_hfov
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        centre = np.array([camera.eye[0], camera.eye[1], 0.0]) + range_m * _unit(bearing, 0.0)
        rotation = _yaw_matrix(yaw)
        base = centre - rotation @ centre_local
        base[2] = base_z
        corners = _box_corners(lo, hi) @ rotation.T + base
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
            "distance_m": round(float(range_m), 4),
        }
    return None


def _place_anomalies(world: _World, camera: Camera, rng: np.random.Generator) -> list[dict[str, Any]] | None:
    """1-3 val/test obstacles, scaled to a 0.2-0.8 m largest side; None if one does not fit."""
    count = int(rng.integers(_ANOMALY_COUNT[0], _ANOMALY_COUNT[1] + 1))
    placed = []
    for number in rng.choice(ANOMALY_OBJECTS, size=count, replace=False):
        asset = _random_urdf(int(number))
        lo, hi = world.bounds(asset.path)
        scale = float(rng.uniform(*_ANOMALY_SIZE) / (hi - lo).max())
        obj = _try_place(world, camera, rng, asset, scale, _ANOMALY_DISTANCE, whole_in_view=True)
        if obj is None:
            return None
        placed.append({**obj, "role": "anomaly"})
    return placed


def _place_known(world: _World, camera: Camera, rng: np.random.Generator) -> list[dict[str, Any]]:
    """0-3 known inlier objects; one that finds no free floor is left out."""
    placed = []
    for _ in range(int(rng.integers(_KNOWN_COUNT[0], _KNOWN_COUNT[1] + 1))):
        asset = KNOWN_OBJECTS[int(rng.integers(len(KNOWN_OBJECTS)))]
        obj = _try_place(world, camera, rng, asset, 1.0, _KNOWN_DISTANCE, whole_in_view=False)
        if obj is not None:
            placed.append({**obj, "role": "known"})
    return placed


def _compose(world: _World, split: str, rng: np.random.Generator) -> tuple[Camera, list[dict[str, Any]]]:
    """Draw a camera and place the frame's objects (anomalies first: they are mandatory in val/test)."""
    for _ in range(_SCENE_TRIES):
        world.clear()
        camera = _sample_camera(rng)
        anomalies = [] if split == "train" else _place_anomalies(world, camera, rng)
        if anomalies is not None:
            return camera, anomalies + _place_known(world, camera, rng)
    raise RuntimeError(f"could not place the anomalies of a {split} frame after {_SCENE_TRIES} cameras")


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")


def _frame_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def render_frame(split: str, index: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render frame ``index`` of ``split``: RGB (HxWx3 uint8), label (HxW uint8 0/1) and metadata.

    The result depends only on (seed, split, index), so splits can be generated in any order or in parallel.
    """
    _check_split(split, SPLITS)
    world = _world()
    rng = _rng(seed, split, index)
    camera, objects = _compose(world, split, rng)
    light = _sample_light(rng)
    rgb, body_ids = world.render(camera, light)
    anomaly_bodies = [o["body"] for o in objects if o["role"] == "anomaly"]
    label = np.where(np.isin(body_ids, anomaly_bodies), np.uint8(ANOMALY), np.uint8(INLIER))
    for obj in objects:
        obj["pixels"] = int(np.count_nonzero(body_ids == obj["body"]))
    anomaly_pixels = int(np.count_nonzero(label == ANOMALY))
    meta = {
        "id": _frame_id(split, index),
        "split": split,
        "seed": seed,
        "index": index,
        "stamp_ns": _STAMP_EPOCH_NS + index * _STAMP_PERIOD_NS,
        "camera": camera.metadata(),
        "light_direction": light,
        "objects": objects,
        "anomaly_pixels": anomaly_pixels,
        "all_occluded": bool(anomaly_bodies) and anomaly_pixels == 0,
    }
    return rgb, label, meta


# ---------------------------------------------------------------- outlier-exposure cut-outs


@functools.lru_cache(maxsize=8)
def _oe_order(seed: int) -> tuple[int, ...]:
    """A seeded permutation of the OE objects, so the first 500 cut-outs are 500 distinct objects."""
    return tuple(int(v) for v in np.random.default_rng([seed, _SEED_STREAMS["oe"]]).permutation(OE_OBJECTS))


def render_cutout(index: int, seed: int) -> tuple[Cutout, dict[str, Any]]:
    """Render OE object number ``index`` alone, high above the courtyard, from a random viewpoint.

    The mask is the object's segmentation, so the background never leaks into the cut-out.
    """
    world = _world()
    rng = _rng(seed, "oe", index)
    order = _oe_order(seed)
    world.clear()
    for step in range(len(order)):  # a few assets have degenerate meshes: take the next one
        asset = _random_urdf(order[(index + step) % len(order)])
        lo, hi = world.bounds(asset.path)
        if float((hi - lo).max()) > 1e-6:
            break
    scale = _OE_LARGEST_SIDE / float((hi - lo).max())
    yaw = float(rng.uniform(0.0, 2 * math.pi))
    centre = np.array([0.0, 0.0, _OE_ALTITUDE])
    body = world.add(asset.path, centre - _yaw_matrix(yaw) @ ((lo + hi) / 2 * scale), yaw, scale)
    radius = float(np.linalg.norm(hi - lo)) / 2 * scale
    direction = _unit(rng.uniform(0.0, 2 * math.pi), math.radians(rng.uniform(*_OE_ELEVATION_DEG)))
    distance = 1.1 * radius / math.sin(math.radians(_OE_VFOV_DEG) / 2)
    eye = tuple(float(v) for v in centre + distance * direction)
    camera = Camera(eye, tuple(float(-v) for v in direction), _OE_VFOV_DEG, _OE_SIZE, _OE_SIZE)
    light = _sample_light(rng)
    rgb, body_ids = world.render(camera, light)
    mask = body_ids == body
    if not mask.any():
        raise RuntimeError(f"OE object {asset.name} rendered empty (cut-out {index}, seed {seed})")
    meta = {"index": index, "seed": seed, "object": asset.name, "yaw_deg": round(math.degrees(yaw), 4),
            "camera": camera.metadata(), "light_direction": light}
    return trim_cutout(Cutout(rgb, mask)), meta


# ---------------------------------------------------------------- generation


def _ordered_map(job: Callable[[int], T], n: int, workers: int, progress: bool, desc: str) -> Iterator[T]:
    """``job(0..n-1)`` in order, in this process or in ``workers`` spawned ones (each with its own client)."""
    from tqdm import tqdm

    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar, contextlib.ExitStack() as stack:
        if workers > 1:
            # spawn, not fork: a forked child would inherit this process's pybullet client.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, n)))
            results: Iterator[T] = pool.imap(job, range(n))
        else:
            results = map(job, range(n))
        for result in results:
            bar.update()
            yield result


def _check_counts(n: int, workers: int) -> None:
    if n < 1 or workers < 1:
        raise ValueError(f"n and workers must be >= 1, got n={n}, workers={workers}")


@contextlib.contextmanager
def _bag_writer(path: Path) -> Iterator[Callable[[int, np.ndarray, np.ndarray], None]]:
    """A rosbag2 (MCAP) writer of (stamp_ns, rgb, label): image and ground truth share stamp and frame."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    image_t = typestore.types["sensor_msgs/msg/Image"]
    header_t = typestore.types["std_msgs/msg/Header"]
    time_t = typestore.types["builtin_interfaces/msg/Time"]

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = [(writer.add_connection(topic, image_t.__msgtype__, typestore=typestore), encoding, channels)
                  for topic, encoding, channels in ((IMAGE_TOPIC, "rgb8", 3), (GT_TOPIC, "mono8", 1))]

        def write(stamp_ns: int, rgb: np.ndarray, label: np.ndarray) -> None:
            stamp = time_t(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            for (connection, encoding, channels), array in zip(topics, (rgb, label)):
                height, width = array.shape[:2]
                msg = image_t(header=header_t(stamp=stamp, frame_id=FRAME_ID), height=height, width=width,
                              encoding=encoding, is_bigendian=0, step=width * channels,
                              data=np.ascontiguousarray(array).reshape(-1))
                writer.write(connection, stamp_ns, typestore.serialize_cdr(msg, image_t.__msgtype__))

        yield write


class _SplitStats:
    """Accumulates the numbers the benchmark report needs (notably the fully-occluded frames)."""

    def __init__(self) -> None:
        self.frames = 0
        self.anomaly_frames = 0
        self.occluded_ids: list[str] = []
        self.anomaly_pixels = 0
        self.valid_pixels = 0

    def add(self, label: np.ndarray, meta: dict[str, Any]) -> None:
        self.frames += 1
        self.anomaly_frames += meta["anomaly_pixels"] > 0
        if meta["all_occluded"]:
            self.occluded_ids.append(meta["id"])
        self.anomaly_pixels += meta["anomaly_pixels"]
        self.valid_pixels += int(np.count_nonzero(label != VOID))

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "anomaly_frames": self.anomaly_frames,
            "fully_occluded_frames": len(self.occluded_ids),
            "fully_occluded_ids": self.occluded_ids,
            "anomaly_pixel_fraction": self.anomaly_pixels / self.valid_pixels if self.valid_pixels else 0.0,
        }


def generate_split(
    out: PathLike, split: str, n: int, seed: int = 0, bag: bool = False, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Render frames 0..n-1 of ``split`` into ``out`` (generic layout + frames.jsonl [+ bag/]).

    Returns (and writes to summary.json) the frame counts, the fully-occluded frames and the
    pooled anomaly pixel fraction, which the benchmark report must state.
    """
    _check_split(split, SPLITS)
    _check_counts(n, workers)
    out = Path(out)
    if bag and (out / "bag").exists():
        raise DatasetError(f"{out / 'bag'} already exists; remove it or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    stats = _SplitStats()
    start = time.perf_counter()
    job = functools.partial(render_frame, split, seed=seed)
    with open(out / "frames.jsonl", "w", encoding="utf-8") as frames_file, contextlib.ExitStack() as stack:
        write_bag = stack.enter_context(_bag_writer(out / "bag")) if bag else None
        for rgb, label, meta in _ordered_map(job, n, workers, progress, f"sim {split}"):
            write_sample(out, meta["id"], rgb, label)
            frames_file.write(json.dumps(meta) + "\n")
            if write_bag is not None:
                write_bag(meta["stamp_ns"], rgb, label)
            stats.add(label, meta)
    summary = {"split": split, "seed": seed, **stats.summary()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {**summary, "seconds_per_frame": (time.perf_counter() - start) / n}


def build_oe_bank(out: PathLike, n: int, seed: int = 0, workers: int = 1, progress: bool = True) -> list[Path]:
    """Render ``n`` RGBA cut-outs of random_urdfs/000..499 into ``out`` (+ cutouts.jsonl); returns the files.

    Beyond 500 cut-outs objects repeat, from new viewpoints.
    """
    _check_counts(n, workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    job = functools.partial(render_cutout, seed=seed)
    with open(out / "cutouts.jsonl", "w", encoding="utf-8") as meta_file:
        for cutout, meta in _ordered_map(job, n, workers, progress, "sim oe"):
            path = out / f"{meta['index']:05d}.png"
            save_cutout(path, cutout)
            meta_file.write(json.dumps({"file": path.name, **meta}) + "\n")
            paths.append(path)
    return paths


# ---------------------------------------------------------------- CLI
