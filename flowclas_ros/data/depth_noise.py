"""A stereo depth camera's errors, applied to the simulator's exact depth before anyone reads it.

Why: a stage measured on a renderer's exact depth would be measured on a sensor no robot has. An
active-stereo camera (a RealSense D4xx class sensor) measures disparity, so its errors live there:

- disparity noise (``sigma_px``), smoothed over the matcher's window (``window_px``): the depth
  error grows with the square of the range (about 2-3 % at 2 m for the defaults);
- sub-pixel quantisation of disparity (``subpixel``): depth comes in steps that widen with range;
- no reading beyond ``max_range`` or nearer than ``min_range``;
- holes: blobs where matching fails (``hole_fraction`` of the frame, blob size ``hole_px``);
- flicker at depth edges: within ``edge_px`` of a depth jump a pixel has no reading with
  probability ``edge_drop`` or else takes the depth of the far side with probability ``edge_swap``.

Written as 16UC1 millimetres (0 = no reading), a further millimetre quantisation. The noise of a
frame depends only on the seed and the frame's id, so a split renders the same depth every time.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

DEPTH_NOISE_STREAM = 0xD3B7  # keeps depth noise apart from every other random stream of a frame


@dataclass(frozen=True)
class StereoDepthNoise:
    baseline_m: float = 0.05
    sigma_px: float = 0.15
    window_px: int = 5
    subpixel: float = 1.0 / 8.0
    min_range: float = 0.2
    max_range: float = 10.0
    hole_fraction: float = 0.03
    hole_px: int = 12
    edge_px: int = 2
    edge_drop: float = 0.4
    edge_swap: float = 0.3

    def apply(self, depth_m: np.ndarray, focal_px: float, rng: np.random.Generator) -> np.ndarray:
        """HxW float32 metres (NaN = no reading) from exact HxW z-depth (inf = nothing: sky)."""
        z = np.asarray(depth_m, dtype=np.float32)
        h, w = z.shape
        valid = np.isfinite(z) & (z > 0)
        fb = np.float32(focal_px * self.baseline_m)
        disparity = np.where(valid, fb / np.where(valid, z, 1.0), 0).astype(np.float32)
        noise = rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32)
        if self.window_px > 1:  # the matcher's window correlates neighbouring errors
            noise = cv2.blur(noise, (self.window_px, self.window_px)) * np.float32(self.window_px)
        disparity = disparity + noise * np.float32(self.sigma_px)
        if self.subpixel > 0:
            disparity = np.round(disparity / self.subpixel) * np.float32(self.subpixel)
        ok = valid & (disparity > 0)
        out = np.full((h, w), np.nan, dtype=np.float32)
        out[ok] = fb / disparity[ok]
        out[(out < self.min_range) | (out > self.max_range)] = np.nan
        self._edges(out, z, valid, rng)
        self._holes(out, rng)
        return out

    def _edges(self, out: np.ndarray, z: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> None:
        if self.edge_px <= 0:
            return
        zz = np.where(valid, z, np.float32(1e4))
        k = 2 * self.edge_px + 1
        near = cv2.erode(zz, np.ones((k, k), np.uint8))  # the nearest depth around a pixel
        far = cv2.dilate(zz, np.ones((k, k), np.uint8))
        edge = (far - near) > np.float32(0.05) * near + np.float32(0.02)
        u = rng.random(z.shape, dtype=np.float32)
        out[edge & (u < self.edge_drop)] = np.nan
        swap = edge & (u >= self.edge_drop) & (u < self.edge_drop + self.edge_swap) & (far < 1e4)
        out[swap] = far[swap]

    def _holes(self, out: np.ndarray, rng: np.random.Generator) -> None:
        if self.hole_fraction <= 0:
            return
        h, w = out.shape
        gh, gw = max(1, h // self.hole_px), max(1, w // self.hole_px)
        field = cv2.resize(rng.random((gh, gw), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        out[field > np.quantile(field, 1.0 - self.hole_fraction)] = np.nan


def frame_depth_rng(seed: int, frame_id: str) -> np.random.Generator:
    """The depth-noise stream of one frame: depends only on the seed and the frame's id."""
    return np.random.default_rng([DEPTH_NOISE_STREAM, int(seed), zlib.crc32(frame_id.encode("utf-8"))])


def to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """HxW float metres (NaN/inf/<= 0 = no reading) -> 16UC1 millimetres, 0 = no reading
    (readings beyond 65.535 m have none)."""
    mm = np.where(np.isfinite(depth_m) & (depth_m > 0), np.round(depth_m * 1000.0), 0)
    mm[mm > 65535] = 0
    return mm.astype(np.uint16)
