"""Tileable ground textures for the terrain worlds: regolith, ripples, cracked crust, patchy cover.

Why this exists: a world's ground is the largest thing a detector learns, so the generated worlds
draw it from several families, not one colour of one noise: a pebbled regolith (the planetary
world's), wind ripples (dunes), a cracked crust (salt flats, dried mud, lunar mare) and a patchy
two-colour cover (lichen, scrub). Every texture is a pure function of its arguments and tiles
seamlessly (all noise is periodic over the tile), so one tile repeated over the plain shows no
seams.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TEXTURE_FAMILIES", "ground_texture", "regolith_texture"]

TEXTURE_FAMILIES: tuple[str, ...] = ("regolith", "ripples", "cracked", "patchy")
REGOLITH = (0.62, 0.43, 0.30)  # the planetary world's mean ground albedo (linear RGB 0..1)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable smooth noise: a periodic random grid upsampled with a cosine blend."""
    grid = rng.random((cells, cells))
    coords = np.arange(size) * cells / size
    i0 = np.floor(coords).astype(int)
    t = (1 - np.cos((coords - i0) * math.pi)) / 2
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - t)[:, None] + grid[i1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]


def _octaves(rng: np.random.Generator, size: int, cells: tuple[int, ...]) -> np.ndarray:
    """Multi-octave tileable noise normalised to 0..1 (coarse octaves weigh most)."""
    height = sum(_value_noise(rng, size, c) / (i + 1) for i, c in enumerate(cells))
    return (height - height.min()) / (np.ptp(height) + 1e-9)


def regolith_texture(size: int = 512, seed: int = 0, albedo: tuple[float, float, float] = REGOLITH,
                     contrast: float = 1.0) -> np.ndarray:
    """A tileable HxWx3 uint8 regolith: multi-octave albedo variation, dark pebbles, fine grain.

    With the defaults this is the planetary world's ground, byte for byte."""
    rng = np.random.default_rng([seed, 7])
    height = sum(_value_noise(rng, size, cells) / (i + 1) for i, cells in enumerate((4, 8, 16, 32, 64)))
    height = (height - height.min()) / (np.ptp(height) + 1e-9)
    base = np.asarray(albedo, dtype=np.float64)
    albedo_map = base[None, None, :] * (0.75 + 0.45 * contrast * height[..., None])
    hue = _value_noise(rng, size, 6)[..., None]
    albedo_map = albedo_map * (1.0 + 0.10 * (hue - 0.5) * np.array([1.0, 0.2, -0.8]))
    pebbles = _value_noise(rng, size, 128) > 0.86
    albedo_map[pebbles] *= 0.55
    albedo_map = albedo_map + rng.normal(0.0, 0.025, albedo_map.shape)
    return np.clip(albedo_map * 255.0, 0, 255).astype(np.uint8)


def _ripples(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """Wind ripples: a whole number of crests per tile, bent by smooth noise (still periodic)."""
    crests = int(rng.integers(10, 24))
    u = np.arange(size) / size
    warp = 0.9 * _value_noise(rng, size, 4) + 0.25 * _value_noise(rng, size, 16)
    phase = 2 * math.pi * (crests * u[None, :] + warp)
    wave = 0.5 + 0.5 * np.sign(np.sin(phase)) * np.abs(np.sin(phase)) ** 0.6  # sharp lee slopes
    return 0.8 + 0.35 * contrast * (wave - 0.5) + 0.15 * contrast * (_octaves(rng, size, (4, 8)) - 0.5)


def _cracked(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """A cracked crust: periodic Voronoi plates of their own brightness, dark cracks between them."""
    count = int(rng.integers(25, 70))
    points = rng.random((count, 2))
    shade = 1.0 + 0.18 * contrast * rng.normal(size=count)
    u = (np.arange(size) + 0.5) / size
    nearest = np.full((size, size), np.inf)
    second = np.full((size, size), np.inf)
    owner = np.zeros((size, size), np.int64)
    for k, (px, py) in enumerate(points):
        dx = np.abs(u[None, :] - px)
        dy = np.abs(u[:, None] - py)
        d = np.hypot(np.minimum(dx, 1 - dx), np.minimum(dy, 1 - dy))  # distance on the torus
        closer = d < nearest
        second = np.where(closer, nearest, np.minimum(second, d))
        owner = np.where(closer, k, owner)
        nearest = np.where(closer, d, nearest)
    crack = (second - nearest) < rng.uniform(0.004, 0.012)
    plates = shade[owner] * (0.9 + 0.2 * contrast * (_octaves(rng, size, (8, 32)) - 0.5))
    return np.where(crack, plates * (1 - 0.45 * min(contrast, 1.5)), plates)


def _patchy(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """A two-tone cover: darker patches (lichen, scrub, wet ground) over a lighter base."""
    cover = _octaves(rng, size, (4, 8, 16, 32))
    edge = np.clip((cover - rng.uniform(0.45, 0.6)) / 0.06, 0.0, 1.0)
    return 1.0 - 0.35 * contrast * edge + 0.12 * contrast * (_octaves(rng, size, (16, 64)) - 0.5)


def ground_texture(family: str, albedo: tuple[float, float, float], contrast: float, seed: int,
                   size: int = 512, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A tileable HxWx3 uint8 ground of ``family`` around the mean colour ``albedo`` (0..1 RGB).

    ``contrast`` scales the albedo variation (1 = the family's own), ``tint`` colours the darker
    parts (the patches of a patchy cover, the plates of a crust). Regolith with contrast 1 and no
    tint is :func:`regolith_texture`."""
    if family == "regolith":
        return regolith_texture(size, seed, albedo, contrast)
    if family not in TEXTURE_FAMILIES:
        raise ValueError(f"unknown ground texture {family!r}; expected one of {', '.join(TEXTURE_FAMILIES)}")
    rng = np.random.default_rng([seed, 7, TEXTURE_FAMILIES.index(family)])
    shade = {"ripples": _ripples, "cracked": _cracked, "patchy": _patchy}[family](rng, size, contrast)
    base = np.asarray(albedo, dtype=np.float64)
    darkness = np.clip(1.0 - shade, 0.0, 1.0)[..., None]  # where the tint shows
    colour = base * (1 - darkness + darkness * np.asarray(tint, dtype=np.float64))
    out = colour * shade[..., None]
    hue = _value_noise(rng, size, 6)[..., None]
    out = out * (1.0 + 0.08 * contrast * (hue - 0.5) * np.array([1.0, 0.2, -0.8]))
    out = out + rng.normal(0.0, 0.02, out.shape)
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)
