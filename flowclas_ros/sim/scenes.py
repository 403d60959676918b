"""What one benchmark frame or one outlier-exposure cut-out contains, drawn from (world, split, index, seed).

The courtyard's content rules are below; the terrain worlds' (planetary and the generated ``gen-N``
family, sim/family.py) live in sim/planetary.py, and every world's split rules in docs/sim-worlds.md. The ``reserved`` split follows the val/test rules with
the reserved named objects (ducks, teddies, balls, ...) as obstacles: the generalisation test.

Why this exists: the benchmark's content rules live here, apart from the simulator plumbing
and from writing datasets. Train frames hold 0-3 known inlier objects, 2.5-9 m ahead of a
randomly posed camera, and no anomalies; val/test frames also hold 1-3 objects from
``random_urdfs/500..999``, 0.2-0.8 m largest side, 1.5-7 m ahead, fully inside the view,
resting on the floor; the outlier-exposure cut-outs show ``random_urdfs/000..499`` alone.

Labels come from the segmentation buffer: 1 on anomaly pixels, 0 elsewhere (the sky and the
courtyard are inliers; no pixel is void). Everything a frame contains is drawn from
``np.random.default_rng([seed, split stream, index])``, and the renderer is history-free, so a
frame's PNG bytes depend only on (seed, split, index): not on worker count, order or what was
rendered before.

Placement is rejection-sampled: an object goes where vertical rays over its footprint reach the
plane first, so nothing is buried in the monastery's platforms or pushed into another object; a
val/test camera whose anomalies cannot all be placed is redrawn.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from flowclas_ros.data.outliers.cutouts import Cutout, trim_cutout
from flowclas_ros.runtime.labels import ANOMALY, INLIER
from flowclas_ros.sim import planetary
from flowclas_ros.sim.camera import Camera, _sample_camera, _sample_light, _unit
from flowclas_ros.sim.family import FIXED_WORLDS, check_world, terrain
from flowclas_ros.sim.placement import try_place, yaw_matrix
from flowclas_ros.sim.topics import frame_stamp_ns
from flowclas_ros.sim.world import (
    ANOMALY_OBJECTS,
    KNOWN_OBJECTS,
    OE_OBJECTS,
    RESERVED_OBJECTS,
    _random_urdf,
    _World,
    _world,
)

__all__ = ["SPLITS", "WORLDS", "render_cutout", "render_frame"]

# reserved: the generalisation split, val/test rules with the reserved named objects as obstacles
SPLITS: tuple[str, ...] = ("train", "val", "test", "reserved")
WORLDS: tuple[str, ...] = FIXED_WORLDS  # and gen-N for any seed N (sim/family.py)
_SEED_STREAMS = {"train": 0, "val": 1, "test": 2, "oe": 3, "reserved": 4}
_WORLD_STREAMS = {"planetary": 1}  # appended to the seed; the courtyard's seeds predate worlds
_GENERATED_STREAM = 2  # gen-N: [seed, split, index, 2, N]

_KNOWN_COUNT = (0, 3)
_KNOWN_DISTANCE = (2.5, 9.0)
_ANOMALY_COUNT = (1, 3)
_ANOMALY_DISTANCE = (1.5, 7.0)
_ANOMALY_SIZE = (0.2, 0.8)  # largest side of the AABB, metres

_SCENE_TRIES = 50  # cameras tried per val/test frame before giving up

_OE_SIZE = 256  # square cut-out render, px
_OE_VFOV_DEG = 40.0
_OE_LARGEST_SIDE = 0.5  # metres; only fixes the camera distance, the image is scale-free
_OE_ALTITUDE = 60.0  # above the monastery roofs, so nothing can occlude the object
_OE_ELEVATION_DEG = (5.0, 50.0)  # seen from slightly above, as a ground robot sees obstacles


def _rng(seed: int, split: str, index: int, world: str = "courtyard") -> np.random.Generator:
    """One independent stream per (seed, split, index, world): frames never depend on each other."""
    key = [seed, _SEED_STREAMS[split], index]
    if world in _WORLD_STREAMS:
        key.append(_WORLD_STREAMS[world])
    elif world != "courtyard":
        key += [_GENERATED_STREAM, int(world.split("-", 1)[1])]
    return np.random.default_rng(key)


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")


def _frame_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _place_anomalies(world: _World, camera: Camera, rng: np.random.Generator,
                     reserved: bool = False) -> list[dict[str, Any]] | None:
    """1-3 val/test obstacles, scaled to a 0.2-0.8 m largest side; None if one does not fit."""
    count = int(rng.integers(_ANOMALY_COUNT[0], _ANOMALY_COUNT[1] + 1))
    placed = []
    if reserved:
        assets = [RESERVED_OBJECTS[int(i)] for i in rng.choice(len(RESERVED_OBJECTS), size=count, replace=False)]
    else:
        assets = [_random_urdf(int(number)) for number in rng.choice(ANOMALY_OBJECTS, size=count, replace=False)]
    for asset in assets:
        lo, hi = world.bounds(asset.path)
        scale = float(rng.uniform(*_ANOMALY_SIZE) / (hi - lo).max())
        obj = try_place(world, camera, rng, asset, scale, _ANOMALY_DISTANCE, whole_in_view=True)
        if obj is None:
            return None
        placed.append({**obj, "role": "anomaly"})
    return placed


def _place_known(world: _World, camera: Camera, rng: np.random.Generator) -> list[dict[str, Any]]:
    """0-3 known inlier objects; one that finds no free floor is left out."""
    placed = []
    for _ in range(int(rng.integers(_KNOWN_COUNT[0], _KNOWN_COUNT[1] + 1))):
        asset = KNOWN_OBJECTS[int(rng.integers(len(KNOWN_OBJECTS)))]
        obj = try_place(world, camera, rng, asset, 1.0, _KNOWN_DISTANCE, whole_in_view=False)
        if obj is not None:
            placed.append({**obj, "role": "known"})
    return placed


def _compose(world: _World, split: str, rng: np.random.Generator, world_name: str
             ) -> tuple[Camera, list[dict[str, Any]]]:
    """Draw a camera and place the frame's objects (anomalies first: they are mandatory in val/test)."""
    reserved = split == "reserved"
    ground = terrain(world_name)
    for _ in range(_SCENE_TRIES):
        world.clear()
        if ground is not None:
            camera = planetary.sample_camera(rng, ground)
            assets = list(RESERVED_OBJECTS) if reserved else [_random_urdf(n) for n in ANOMALY_OBJECTS]
            anomalies = [] if split == "train" else planetary.place_anomalies(world, camera, rng, assets, ground)
            if anomalies is not None:
                return camera, anomalies + planetary.place_known(world, camera, rng, ground)
            continue
        camera = _sample_camera(rng)
        anomalies = [] if split == "train" else _place_anomalies(world, camera, rng, reserved)
        if anomalies is not None:
            return camera, anomalies + _place_known(world, camera, rng)
    raise RuntimeError(f"could not place the anomalies of a {split} frame after {_SCENE_TRIES} cameras")


def _client(world_name: str) -> _World:
    check_world(world_name)
    ground = terrain(world_name)
    if ground is not None:
        return _world(world_name, functools.partial(planetary.build_static, terrain=ground))
    return _world()


def render_frame(split: str, index: int, seed: int, world: str = "courtyard", with_depth: bool = False) -> tuple:
    """Render frame ``index`` of ``split`` in ``world``: RGB (HxWx3 uint8), label (HxW uint8 0/1) and
    metadata, and with ``with_depth`` a fourth item: the aligned z-depth (HxW float32 metres, inf = sky).

    The result depends only on (seed, split, index, world), so splits can be generated in any order
    or in parallel.
    """
    _check_split(split, SPLITS)
    client = _client(world)
    rng = _rng(seed, split, index, world)
    camera, objects = _compose(client, split, rng, world)
    ground = terrain(world)
    light = planetary.sample_light(rng, ground) if ground is not None else _sample_light(rng)
    rgb, body_ids, depth = client.render_with_depth(camera, light)
    if ground is not None:
        rgb = planetary.paint_sky(rgb, body_ids, camera, ground)
    anomaly_bodies = [o["body"] for o in objects if o["role"] == "anomaly"]
    label = np.where(np.isin(body_ids, anomaly_bodies), np.uint8(ANOMALY), np.uint8(INLIER))
    for obj in objects:
        obj["pixels"] = int(np.count_nonzero(body_ids == obj["body"]))
    anomaly_pixels = int(np.count_nonzero(label == ANOMALY))
    meta = {
        "id": _frame_id(split, index),
        "world": world,
        "split": split,
        "seed": seed,
        "index": index,
        "stamp_ns": frame_stamp_ns(index),
        "camera": camera.metadata(),
        "light_direction": light,
        "objects": objects,
        "anomaly_pixels": anomaly_pixels,
        "all_occluded": bool(anomaly_bodies) and anomaly_pixels == 0,
    }
    return (rgb, label, meta, depth) if with_depth else (rgb, label, meta)


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
    body = world.add(asset.path, centre - yaw_matrix(yaw) @ ((lo + hi) / 2 * scale), yaw, scale)
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
