"""The family of worlds: courtyard, planetary, and a new terrain world for every seed (``gen-N``).

Why this exists: a recipe chosen in one world fits that world. To choose on some worlds and report
on others, the generator draws whole deployments from a seed: ground (texture family, albedo,
variation), sky, sun elevation and shadows, lighting, camera height / pitch / field of view, the
robot camera's noise and JPEG, inlier clutter (rock count, sizes, reach, a parked rover), and the
obstacles (count, sizes, distances, share painted in the ground's colours). Each ``gen-N`` is a
:class:`~flowclas_ros.sim.planetary.Terrain` rendered by the planetary world's code, so the
placement rules, labels and split streams are the same for every member; the courtyard and
planetary keep their own fixed rules (and renders).

A world is a pure function of its seed: ``terrain("gen-7")`` is the same on every machine.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from flowclas_ros.data.camera_model import ROBOT_CAMERA, CameraModel
from flowclas_ros.sim.planetary import PLANETARY, Terrain
from flowclas_ros.sim.textures import REGOLITH, TEXTURE_FAMILIES

__all__ = ["FIXED_WORLDS", "bag_jpeg_quality", "check_world", "robot_camera", "terrain"]

FIXED_WORLDS: tuple[str, ...] = ("courtyard", "planetary")
GENERATED = re.compile(r"gen-(\d{1,9})")
_FAMILY_STREAM = 22  # the world draw's own random stream, apart from every frame's

# mean ground colours (linear RGB 0..1) the draw starts from, then jitters
_PALETTES: dict[str, tuple[float, float, float]] = {
    "lunar": (0.42, 0.41, 0.40),
    "martian": REGOLITH,
    "sand": (0.74, 0.62, 0.44),
    "basalt": (0.27, 0.25, 0.24),
    "olive": (0.40, 0.42, 0.26),
    "ash": (0.66, 0.65, 0.62),
}
# sky kinds: (horizon, zenith) 0..255 RGB before jitter
_SKIES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "black": ((18.0, 18.0, 20.0), (4.0, 4.0, 6.0)),  # airless: the sky is black by day
    "dusty": ((214.0, 170.0, 128.0), (120.0, 96.0, 84.0)),
    "blue": ((196.0, 214.0, 232.0), (82.0, 128.0, 196.0)),
    "overcast": ((208.0, 208.0, 204.0), (150.0, 152.0, 156.0)),
}


def check_world(name: str) -> None:
    """ValueError naming the families when ``name`` is no world."""
    if name not in FIXED_WORLDS and not GENERATED.fullmatch(name):
        raise ValueError(f"unknown world {name!r}; expected courtyard, planetary or gen-N (N a seed >= 0)")


def _jitter(rng: np.random.Generator, colour: tuple[float, ...], spread: float, scale: float = 1.0
            ) -> tuple[float, float, float]:
    return tuple(round(float(np.clip(c * rng.uniform(1 - spread, 1 + spread) * scale, 0, scale * 255)), 4)
                 for c in colour)  # type: ignore[return-value]


def _range(lo: float, hi: float) -> tuple[float, float]:
    return (round(float(lo), 4), round(float(hi), 4))


def _draw(seed: int) -> Terrain:
    """One world's axes, drawn from ``seed`` (module docstring)."""
    rng = np.random.default_rng([seed, _FAMILY_STREAM])
    palette = list(_PALETTES)[int(rng.integers(len(_PALETTES)))]
    brightness = rng.uniform(0.8, 1.2)
    albedo = tuple(round(float(np.clip(c * brightness * rng.uniform(0.9, 1.1), 0.05, 0.95)), 4)
                   for c in _PALETTES[palette])
    texture = TEXTURE_FAMILIES[int(rng.integers(len(TEXTURE_FAMILIES)))]
    tint = tuple(round(float(v), 4) for v in rng.uniform(0.6, 1.2, 3))
    sky_kind = "black" if palette == "lunar" and rng.random() < 0.7 else list(_SKIES)[int(rng.integers(len(_SKIES)))]
    horizon, zenith = _SKIES[sky_kind]
    sun = rng.uniform(8.0, 60.0)
    sun_spread = rng.uniform(4.0, 18.0)
    airless = sky_kind == "black"
    height_lo = rng.uniform(0.35, 1.3)
    pitch_mid = rng.uniform(-20.0, -6.0)
    pitch_half = rng.uniform(2.0, 7.0)
    vfov = rng.uniform(42.0, 80.0)
    rock_lo = int(rng.integers(0, 8))
    obstacle_far = rng.uniform(10.0, 30.0)
    return Terrain(
        name=f"gen-{seed}",
        texture=texture,
        albedo=albedo,  # type: ignore[arg-type]
        texture_contrast=round(float(rng.uniform(0.5, 1.6)), 4),
        texture_tint=tint,  # type: ignore[arg-type]
        texture_seed=int(seed),
        texture_tile_m=round(float(rng.uniform(2.0, 8.0)), 3),
        sky_horizon=_jitter(rng, horizon, 0.1),
        sky_zenith=_jitter(rng, zenith, 0.1),
        light_elevation_deg=_range(max(4.0, sun - sun_spread), min(80.0, sun + sun_spread)),
        shadows=bool(airless or rng.random() < 0.8),
        light_colour=tuple(round(float(v), 4) for v in rng.uniform(0.85, 1.0, 3)),  # type: ignore[arg-type]
        ambient=round(float(rng.uniform(0.12, 0.3) if airless else rng.uniform(0.3, 0.6)), 4),  # hard shadows
        diffuse=round(float(rng.uniform(0.5, 0.85)), 4),
        specular=round(float(rng.uniform(0.0, 0.15)), 4),
        camera_height=_range(height_lo, height_lo + rng.uniform(0.2, 0.9)),
        camera_pitch_deg=_range(pitch_mid - pitch_half, min(-2.0, pitch_mid + pitch_half)),
        vfov_deg=round(float(vfov), 3),
        rock_count=(rock_lo, rock_lo + int(rng.integers(3, 26))),
        rock_distance=_range(1.5, rng.uniform(20.0, 60.0)),
        rock_size=_range(rng.uniform(0.04, 0.2), rng.uniform(0.5, 2.0)),
        rock_grey=_range(rng.uniform(0.15, 0.4), rng.uniform(0.6, 0.9)),
        rover_probability=round(float(rng.uniform(0.0, 0.4)), 4),
        anomaly_count=(1, int(rng.integers(2, 5))),
        anomaly_distance=_range(1.5, obstacle_far),
        anomaly_size=_range(rng.uniform(0.06, 0.15), rng.uniform(0.5, 1.2)),
        low_contrast_probability=round(float(rng.uniform(0.1, 0.55)), 4),
    )


@functools.lru_cache(maxsize=64)
def terrain(name: str) -> Terrain | None:
    """The Terrain of a terrain world (planetary or gen-N); None for the courtyard."""
    check_world(name)
    if name == "courtyard":
        return None
    if name == "planetary":
        return PLANETARY
    return _draw(int(name.split("-", 1)[1]))


def robot_camera(name: str) -> CameraModel:
    """The camera a world's robot logs through: ROBOT_CAMERA for the fixed worlds, a drawn one
    (exposure, vignetting, blur, noise, JPEG) for a generated world."""
    check_world(name)
    if name in FIXED_WORLDS:
        return ROBOT_CAMERA
    rng = np.random.default_rng([int(name.split("-", 1)[1]), _FAMILY_STREAM, 1])
    gain = rng.uniform(0.0, 0.3)
    jpeg = rng.uniform(55.0, 88.0)
    return CameraModel(gain=_range(1 - gain, 1 + gain), vignetting=_range(0.0, rng.uniform(0.0, 0.4)),
                       motion_blur_px=_range(0.0, rng.uniform(0.0, 3.5)),
                       shot_noise=_range(0.0, rng.uniform(0.1, 0.7)),
                       read_noise=_range(rng.uniform(0.5, 2.0), rng.uniform(2.0, 7.0)),
                       jpeg_quality=_range(jpeg, min(100.0, jpeg + rng.uniform(5.0, 15.0))))


def bag_jpeg_quality(name: str) -> int:
    """The JPEG quality a world's robot logs its image topic at (90 for the fixed worlds)."""
    check_world(name)
    if name in FIXED_WORLDS:
        return 90
    return int(np.random.default_rng([int(name.split("-", 1)[1]), _FAMILY_STREAM, 2]).integers(70, 96))

