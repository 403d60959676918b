"""Terrain worlds: a rover on an open plain among rocks, under a sun and a sky; planetary is one.

Why this exists: a detector tuned in one world says little about the next one. The planetary
world is unlike the courtyard on every axis a user's robot varies: ground (a reddish textured
regolith instead of a grey floor), inlier clutter (many procedural rocks of every size and a parked
rover instead of furniture), light (a low sun with cast shadows, a butterscotch sky) and geometry
(an open plain where obstacles can stand 20 m away and cover a few pixels). Every one of those
axes is a field of :class:`Terrain`; ``PLANETARY`` holds the planetary world's values, and the
generated family (sim/family.py) draws new ones from a seed, so every terrain world is rendered by
the same code. The split rules are the courtyard's: train frames hold no obstacles, val/test
obstacles are ``random_urdfs/500..999``, the generalisation split uses the reserved named objects,
OE stays ``random_urdfs/000..499``. Some obstacles are repainted in ground or rock colours, because
a grey rock-like box on grey-red ground is what a planetary rover actually meets.

The ground texture and rock meshes are generated from fixed seeds, so every process (and every
machine) renders the same world; the texture files are written once to a per-user cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.sim.camera import VFOV_DEG, Camera, _sample_camera, _sample_light, _unit
from flowclas_ros.sim.placement import CLEARANCE, sample_range, try_place
from flowclas_ros.sim.textures import REGOLITH, ground_texture, regolith_texture
from flowclas_ros.sim.world import _Asset, _World

__all__ = ["PLANETARY", "Terrain", "build_static", "paint_sky", "place_anomalies", "place_known", "rock_mesh"]

_GROUND_HALF = 250.0  # metres: beyond the far plane's ground footprint for a camera within 60 m of 0
_TEXTURE_PX = 512
_ROCK_SHAPES = 16  # distinct procedural rock meshes per process
_ROVER = _Asset("husky/husky.urdf", "husky/husky.urdf")

Range = tuple[float, float]
Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Terrain:
    """Everything that makes one terrain world: ground, sky, light, camera, clutter and obstacles.

    Ranges are [min, max] drawn per frame; the defaults are the planetary world's. Frozen and
    hashable: a world's client and its cached files are keyed by it."""

    name: str = "planetary"
    # ground (sim/textures.py): family, mean albedo (linear RGB 0..1), variation, tint, texture seed
    texture: str = "regolith"
    albedo: Colour = REGOLITH
    texture_contrast: float = 1.0
    texture_tint: Colour = (1.0, 1.0, 1.0)
    texture_seed: int = 0
    texture_tile_m: float = 4.0  # one texture tile covers this many metres of ground
    # sky (painted where no surface is hit), 0..255 RGB at the horizon and overhead
    sky_horizon: Colour = (214.0, 170.0, 128.0)
    sky_zenith: Colour = (120.0, 96.0, 84.0)
    # light: the sun's elevation and the renderer's lighting
    light_elevation_deg: Range = (8.0, 45.0)
    shadows: bool = True
    light_colour: Colour = (1.0, 0.93, 0.82)
    ambient: float = 0.45
    diffuse: float = 0.6
    specular: float = 0.05
    # camera pose and lens
    camera_xy: Range = (-60.0, 60.0)
    camera_height: Range = (0.5, 1.6)
    camera_pitch_deg: Range = (-22.0, -3.0)  # shallow: the horizon, and far obstacles, are in view
    vfov_deg: float = VFOV_DEG
    # inlier clutter: rocks (largest side and distance log-uniform) and now and then a parked rover
    rock_count: tuple[int, int] = (4, 18)
    rock_distance: Range = (1.5, 40.0)
    rock_size: Range = (0.08, 1.4)
    rock_grey: Range = (0.3, 0.75)
    rover_probability: float = 0.3
    rover_distance: Range = (3.0, 15.0)
    # obstacles (val / test / reserved): largest side and distance log-uniform
    anomaly_count: tuple[int, int] = (1, 3)
    anomaly_distance: Range = (1.5, 20.0)
    anomaly_size: Range = (0.1, 1.0)
    low_contrast_probability: float = 0.3  # obstacles repainted in a ground / rock colour

    def render_options(self) -> dict[str, Any]:
        return {"shadow": int(self.shadows), "lightColor": list(self.light_colour),
                "lightAmbientCoeff": self.ambient, "lightDiffuseCoeff": self.diffuse,
                "lightSpecularCoeff": self.specular}

    def ground(self) -> np.ndarray:
        """The ground texture tile (HxWx3 uint8)."""
        if (self.texture, self.albedo, self.texture_contrast) == ("regolith", REGOLITH, 1.0):
            return regolith_texture(_TEXTURE_PX, self.texture_seed)
        return ground_texture(self.texture, self.albedo, self.texture_contrast, self.texture_seed,
                              _TEXTURE_PX, self.texture_tint)

    def describe(self) -> dict[str, Any]:
        """The world's axes as JSON-able values (for summaries and reports)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


PLANETARY = Terrain()


def _asset_dir(terrain: Terrain) -> Path:
    """The world's generated ground files, written once per content version (atomically: workers race)."""
    import cv2

    texture = terrain.ground()
    tile = 2 * _GROUND_HALF / terrain.texture_tile_m
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


def build_static(world: _World, terrain: Terrain = PLANETARY) -> int:
    """Load the world's plain; returns the ground body. Rendering gets the world's light and shadows."""
    ground = world.client.loadURDF(str(_asset_dir(terrain) / "ground.urdf"))
    world.render_options = terrain.render_options()
    _ROCKS[id(world)] = _Rocks(world)
    return ground


# ---------------------------------------------------------------- content rules


def sample_camera(rng: np.random.Generator, terrain: Terrain = PLANETARY) -> Camera:
    return _sample_camera(rng, terrain.camera_xy, terrain.camera_height, terrain.camera_pitch_deg, terrain.vfov_deg)


def sample_light(rng: np.random.Generator, terrain: Terrain = PLANETARY) -> list[float]:
    """The sun: planetary's is low (long shadows and grazing light)."""
    return _sample_light(rng, terrain.light_elevation_deg)


def _rock_colour(rng: np.random.Generator, terrain: Terrain) -> tuple[float, float, float, float]:
    grey = rng.uniform(*terrain.rock_grey)
    albedo = np.asarray(terrain.albedo)
    tint = albedo / albedo.mean()
    mix = rng.uniform(0.2, 0.9)
    rgb = grey * (mix * tint + (1 - mix))
    return (*np.clip(rgb, 0, 1).tolist(), 1.0)


def place_rocks(world: _World, camera: Camera, rng: np.random.Generator,
                terrain: Terrain = PLANETARY) -> list[dict[str, Any]]:
    """Inlier clutter: rocks of every size, near and far, each on free ground (none that does not fit)."""
    rocks = _ROCKS[id(world)]
    placed = []
    camera_yaw = math.radians(camera.yaw_deg)
    for _ in range(int(rng.integers(terrain.rock_count[0], terrain.rock_count[1] + 1))):
        kind = int(rng.integers(_ROCK_SHAPES))
        size = sample_range(rng, terrain.rock_size, log_uniform=True)
        range_m = sample_range(rng, terrain.rock_distance, log_uniform=True)
        bearing = camera_yaw + rng.uniform(-1.2, 1.2) * camera.half_hfov
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        colour = _rock_colour(rng, terrain)
        centre = np.array([camera.eye[0], camera.eye[1], 0.0]) + range_m * _unit(bearing, 0.0)
        if not world.floor_free(centre, size / 2 + CLEARANCE):
            continue
        visual, collision = rocks.shape(kind, size)
        base = centre - np.array([0.0, 0.0, 0.1 * size])  # partly sunk into the ground
        body = world.add_shape(visual, collision, base, yaw, colour)
        placed.append({"name": f"rock/{kind:02d}", "body": body, "role": "known",
                       "position": [round(float(v), 6) for v in base], "yaw_deg": round(math.degrees(yaw), 4),
                       "size_m": round(size, 4), "distance_m": round(range_m, 4)})
    return placed


def place_known(world: _World, camera: Camera, rng: np.random.Generator,
                terrain: Terrain = PLANETARY) -> list[dict[str, Any]]:
    """A parked rover now and then, then the rocks."""
    placed = []
    if rng.random() < terrain.rover_probability:
        rover = try_place(world, camera, rng, _ROVER, 1.0, terrain.rover_distance, whole_in_view=False)
        if rover is not None:
            placed.append({**rover, "role": "known"})
    return placed + place_rocks(world, camera, rng, terrain)


def place_anomalies(world: _World, camera: Camera, rng: np.random.Generator, assets: list[_Asset],
                    terrain: Terrain = PLANETARY) -> list[dict[str, Any]] | None:
    """The world's obstacles (planetary: 1-3, 0.1-1.0 m, 1.5-20 m away, log-uniform), some
    repainted in ground or rock colours; None if one does not fit."""
    count = int(rng.integers(terrain.anomaly_count[0], terrain.anomaly_count[1] + 1))
    placed = []
    for pick in rng.choice(len(assets), size=count, replace=False):
        asset = assets[int(pick)]
        lo, hi = world.bounds(asset.path)
        scale = float(sample_range(rng, terrain.anomaly_size, log_uniform=True) / (hi - lo).max())
        obj = try_place(world, camera, rng, asset, scale, terrain.anomaly_distance, whole_in_view=True,
                        log_uniform=True)
        if obj is None:
            return None
        low_contrast = bool(rng.random() < terrain.low_contrast_probability)
        if low_contrast:
            world.recolour(obj["body"], _rock_colour(rng, terrain) if rng.random() < 0.5 else
                           (*np.clip(np.asarray(terrain.albedo) * rng.uniform(0.85, 1.15), 0, 1).tolist(), 1.0))
        placed.append({**obj, "role": "anomaly", "low_contrast": low_contrast})
    return placed


def paint_sky(rgb: np.ndarray, body_ids: np.ndarray, camera: Camera, terrain: Terrain = PLANETARY) -> np.ndarray:
    """Pixels that hit nothing get the world's sky, its horizon colour blending into its zenith colour."""
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
    horizon = np.asarray(terrain.sky_horizon, dtype=np.float32)
    zenith = np.asarray(terrain.sky_zenith, dtype=np.float32)
    out = rgb.copy()
    out[rows, cols] = np.clip(horizon * (1 - blend) + zenith * blend, 0, 255).astype(np.uint8)
    return out
