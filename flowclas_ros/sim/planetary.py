"""The planetary world: a rover on open regolith among rocks, under a low sun and a dusty sky.

Why this exists: a detector tuned in one world says little about the next one. This world is
unlike the courtyard on every axis a user's robot varies: ground (a reddish textured regolith
instead of a grey floor), inlier clutter (many procedural rocks of every size and a parked rover
instead of furniture), light (a low sun with cast shadows, a butterscotch sky) and geometry (an
open plain where obstacles can stand 20 m away and cover a few pixels). The split rules are the
courtyard's: train frames hold no obstacles, val/test obstacles are ``random_urdfs/500..999``, the
generalisation split uses the reserved named objects, OE stays ``random_urdfs/000..499``. Some
obstacles are repainted in regolith colours, because a grey rock-like box on grey-red ground is
what a planetary rover actually meets.

The ground texture and rock meshes are generated from fixed seeds, so every process (and every
machine) renders the same world; the texture files are written once to a per-user cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.sim.camera import Camera, _sample_camera, _sample_light, _unit
from flowclas_ros.sim.placement import CLEARANCE, sample_range, try_place
from flowclas_ros.sim.world import _Asset, _World

__all__ = ["build_static", "paint_sky", "place_anomalies", "place_known", "regolith_texture", "rock_mesh"]

_GROUND_HALF = 250.0  # metres: beyond the far plane's ground footprint for a camera within _CAMERA_XY
_TEXTURE_PX = 512
_TEXTURE_TILE_M = 4.0  # one texture tile covers this many metres of ground
_ROCK_SHAPES = 16  # distinct procedural rock meshes per process
_REGOLITH = np.array([0.62, 0.43, 0.30])  # mean ground albedo (linear RGB 0..1)

_CAMERA_XY = (-60.0, 60.0)
_CAMERA_HEIGHT = (0.5, 1.6)
_CAMERA_PITCH_DEG = (-22.0, -3.0)  # shallower than the courtyard's: the horizon, and far obstacles, are in view
_LIGHT_ELEVATION_DEG = (8.0, 45.0)

_ROCK_COUNT = (4, 18)
_ROCK_DISTANCE = (1.5, 40.0)
_ROCK_SIZE = (0.08, 1.4)  # largest side, metres, log-uniform
_ROVER = _Asset("husky/husky.urdf", "husky/husky.urdf")
_ROVER_PROBABILITY = 0.3
_ROVER_DISTANCE = (3.0, 15.0)

_ANOMALY_COUNT = (1, 3)
_ANOMALY_DISTANCE = (1.5, 20.0)  # log-uniform: far, few-pixel obstacles are as common as near ones
_ANOMALY_SIZE = (0.1, 1.0)  # largest side, metres
_LOW_CONTRAST_PROBABILITY = 0.3  # obstacles repainted in a regolith / rock colour

_SKY_HORIZON = np.array([214, 170, 128], dtype=np.float32)
_SKY_ZENITH = np.array([120, 96, 84], dtype=np.float32)


# ---------------------------------------------------------------- static scene (fixed seeds)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable smooth noise: a periodic random grid upsampled with a cosine blend."""
    grid = rng.random((cells, cells))
    coords = np.arange(size) * cells / size
    i0 = np.floor(coords).astype(int)
    t = (1 - np.cos((coords - i0) * math.pi)) / 2
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - t)[:, None] + grid[i1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]


def regolith_texture(size: int = _TEXTURE_PX, seed: int = 0) -> np.ndarray:
    """A tileable HxWx3 uint8 regolith: multi-octave albedo variation, dark pebbles, fine grain."""
    rng = np.random.default_rng([seed, 7])
    height = sum(_value_noise(rng, size, cells) / (i + 1) for i, cells in enumerate((4, 8, 16, 32, 64)))
    height = (height - height.min()) / (np.ptp(height) + 1e-9)
    albedo = _REGOLITH[None, None, :] * (0.75 + 0.45 * height[..., None])
    hue = _value_noise(rng, size, 6)[..., None]
    albedo = albedo * (1.0 + 0.10 * (hue - 0.5) * np.array([1.0, 0.2, -0.8]))
    pebbles = _value_noise(rng, size, 128) > 0.86
    albedo[pebbles] *= 0.55
    albedo = albedo + rng.normal(0.0, 0.025, albedo.shape)
    return np.clip(albedo * 255.0, 0, 255).astype(np.uint8)


def _asset_dir() -> Path:
    """The generated ground files, written once per content version (atomically: workers race)."""
    import cv2

    texture = regolith_texture()
    tile = 2 * _GROUND_HALF / _TEXTURE_TILE_M
    obj = "\n".join([
        "mtllib ground.mtl",
        "o Ground",
        *(f"v {x} {y} 0.0" for x, y in ((_GROUND_HALF, -_GROUND_HALF), (_GROUND_HALF, _GROUND_HALF),
                                         (-_GROUND_HALF, _GROUND_HALF), (-_GROUND_HALF, -_GROUND_HALF))),
        *(f"vt {u} {v}" for u, v in ((tile, 0), (tile, tile), (0, tile), (0, 0))),
        "usemtl Regolith", "s off", "f 1/1 2/2 3/3", "f 1/1 3/3 4/4", "",
    ])
    mtl = "newmtl Regolith\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nmap_Kd ground.png\n"
    urdf = ('<?xml version="1.0"?>\n<robot name="regolith"><link name="ground">'
            '<inertial><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>'
            '<visual><geometry><mesh filename="ground.obj" scale="1 1 1"/></geometry></visual>'
            f'<collision><origin xyz="0 0 -5"/><geometry><box size="{2 * _GROUND_HALF} {2 * _GROUND_HALF} 10"/>'
            '</geometry></collision></link></robot>\n')
    digest = hashlib.sha256(texture.tobytes() + (obj + mtl + urdf).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowclas_ros" / f"planetary-{digest}"
    if not (root / "ground.urdf").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root.parent))
        cv2.imwrite(str(staging / "ground.png"), texture[..., ::-1])
        for name, text in (("ground.obj", obj), ("ground.mtl", mtl), ("ground.urdf", urdf)):
            (staging / name).write_text(text, encoding="utf-8")
        try:
            staging.rename(root)
        except OSError:  # another worker won the race: its files are identical
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()
    return root


def rock_mesh(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """A unit-size rock: an icosphere (162 vertices) with radial noise, flattened, base at z=0."""
    t = (1 + math.sqrt(5)) / 2
    vertices = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
                (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    points = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in vertices]
    for _ in range(2):  # subdivide: 12 -> 42 -> 162 vertices
        cache: dict[tuple[int, int], int] = {}

        def middle(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = points[a] + points[b]
                points.append(m / np.linalg.norm(m))
                cache[key] = len(points) - 1
            return cache[key]

        faces = [tri for a, b, c in faces for tri in (
            (a, middle(a, b), middle(a, c)), (b, middle(b, c), middle(a, b)),
            (c, middle(a, c), middle(b, c)), (middle(a, b), middle(b, c), middle(a, c)))]
    unit = np.array(points)
    bumps = 1.0 + 0.22 * np.tanh(unit @ rng.normal(size=(3, 6))).sum(axis=1) / 3 + rng.normal(0, 0.03, len(unit))
    mesh = unit * bumps[:, None] * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.35, 0.8)])
    mesh[:, 2] = np.maximum(mesh[:, 2], -0.15 * np.ptp(mesh[:, 2]))  # a flat, partly buried underside
    mesh -= [0.0, 0.0, mesh[:, 2].min()]
    mesh /= np.ptp(mesh, axis=0).max()
    return mesh, [i for face in faces for i in face]


class _Rocks:
    """Procedural rock shapes created once per client; a rock is one of them, scaled and coloured."""

    def __init__(self, world: _World) -> None:
        rng = np.random.default_rng([0, 17])
        self.meshes = [rock_mesh(rng) for _ in range(_ROCK_SHAPES)]
        self.world = world
        self._shapes: dict[tuple[int, float], tuple[int, int]] = {}

    def shape(self, kind: int, size: float) -> tuple[int, int]:
        """(visual, collision) ids of mesh ``kind`` at ``size`` (sizes rounded to 1 cm and cached)."""
        key = (kind, round(size, 2))
        if key not in self._shapes:
            vertices, indices = self.meshes[kind]
            scaled = (vertices * key[1]).tolist()
            pb, client = self.world.pb, self.world.client
            visual = client.createVisualShape(pb.GEOM_MESH, vertices=scaled, indices=indices)
            collision = client.createCollisionShape(pb.GEOM_MESH, vertices=scaled)
            self._shapes[key] = (visual, collision)
        return self._shapes[key]


_ROCKS: dict[int, _Rocks] = {}  # per client (one per world and process, alive as long as the process)


def build_static(world: _World) -> int:
    """Load the regolith plain; returns the ground body. Rendering gets cast shadows and a warm sun."""
    ground = world.client.loadURDF(str(_asset_dir() / "ground.urdf"))
    world.render_options = {"shadow": 1, "lightColor": [1.0, 0.93, 0.82], "lightAmbientCoeff": 0.45,
                            "lightDiffuseCoeff": 0.6, "lightSpecularCoeff": 0.05}
    _ROCKS[id(world)] = _Rocks(world)
    return ground


# ---------------------------------------------------------------- content rules


def sample_camera(rng: np.random.Generator) -> Camera:
    return _sample_camera(rng, _CAMERA_XY, _CAMERA_HEIGHT, _CAMERA_PITCH_DEG)


def sample_light(rng: np.random.Generator) -> list[float]:
    """A low sun: long shadows and grazing light, as on a planetary surface."""
    return _sample_light(rng, _LIGHT_ELEVATION_DEG)


def _rock_colour(rng: np.random.Generator) -> tuple[float, float, float, float]:
    grey = rng.uniform(0.3, 0.75)
    tint = _REGOLITH / _REGOLITH.mean()
    mix = rng.uniform(0.2, 0.9)
    rgb = grey * (mix * tint + (1 - mix))
    return (*np.clip(rgb, 0, 1).tolist(), 1.0)


def place_rocks(world: _World, camera: Camera, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Inlier clutter: rocks of every size, near and far, each on free ground (none that does not fit)."""
    rocks = _ROCKS[id(world)]
    placed = []
    camera_yaw = math.radians(camera.yaw_deg)
    for _ in range(int(rng.integers(_ROCK_COUNT[0], _ROCK_COUNT[1] + 1))):
        kind = int(rng.integers(_ROCK_SHAPES))
        size = sample_range(rng, _ROCK_SIZE, log_uniform=True)
        range_m = sample_range(rng, _ROCK_DISTANCE, log_uniform=True)
        bearing = camera_yaw + rng.uniform(-1.2, 1.2) * camera.half_hfov
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        colour = _rock_colour(rng)
        centre = np.array([camera.eye[0], camera.eye[1], 0.0]) + range_m * _unit(bearing, 0.0)
        if not world.floor_free(centre, size / 2 + CLEARANCE):
            continue
        visual, collision = rocks.shape(kind, size)
        base = centre - np.array([0.0, 0.0, 0.1 * size])  # partly sunk into the regolith
        body = world.add_shape(visual, collision, base, yaw, colour)
        placed.append({"name": f"rock/{kind:02d}", "body": body, "role": "known",
                       "position": [round(float(v), 6) for v in base], "yaw_deg": round(math.degrees(yaw), 4),
                       "size_m": round(size, 4), "distance_m": round(range_m, 4)})
    return placed


def place_known(world: _World, camera: Camera, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A parked rover now and then, then the rocks."""
    placed = []
    if rng.random() < _ROVER_PROBABILITY:
        rover = try_place(world, camera, rng, _ROVER, 1.0, _ROVER_DISTANCE, whole_in_view=False)
        if rover is not None:
            placed.append({**rover, "role": "known"})
    return placed + place_rocks(world, camera, rng)


def place_anomalies(world: _World, camera: Camera, rng: np.random.Generator,
                    assets: list[_Asset]) -> list[dict[str, Any]] | None:
    """1-3 obstacles, 0.1-1.0 m, 1.5-20 m away (log-uniform), some repainted in ground colours."""
    count = int(rng.integers(_ANOMALY_COUNT[0], _ANOMALY_COUNT[1] + 1))
    placed = []
    for pick in rng.choice(len(assets), size=count, replace=False):
        asset = assets[int(pick)]
        lo, hi = world.bounds(asset.path)
        scale = float(sample_range(rng, _ANOMALY_SIZE, log_uniform=True) / (hi - lo).max())
        obj = try_place(world, camera, rng, asset, scale, _ANOMALY_DISTANCE, whole_in_view=True, log_uniform=True)
        if obj is None:
            return None
        low_contrast = bool(rng.random() < _LOW_CONTRAST_PROBABILITY)
        if low_contrast:
            world.recolour(obj["body"], _rock_colour(rng) if rng.random() < 0.5 else
                           (*np.clip(_REGOLITH * rng.uniform(0.85, 1.15), 0, 1).tolist(), 1.0))
        placed.append({**obj, "role": "anomaly", "low_contrast": low_contrast})
    return placed


def paint_sky(rgb: np.ndarray, body_ids: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixels that hit nothing get a dusty sky, bright at the horizon and darker towards the zenith."""
    sky = body_ids < 0
    if not sky.any():
        return rgb
    forward = np.asarray(camera.forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rows, cols = np.nonzero(sky)
    x = (cols + 0.5 - camera.width / 2) / camera.focal_px
    y = (camera.height / 2 - rows - 0.5) / camera.focal_px
    direction_z = forward[2] + x * right[2] + y * up[2]
    elevation = np.clip(direction_z / np.sqrt(1 + x * x + y * y), 0.0, 1.0)
    blend = np.sqrt(elevation)[:, None]
    out = rgb.copy()
    out[rows, cols] = np.clip(_SKY_HORIZON * (1 - blend) + _SKY_ZENITH * blend, 0, 255).astype(np.uint8)
    return out

