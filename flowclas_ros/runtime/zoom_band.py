"""The zoomed band: a second look, magnified, at the rows where small far obstacles are.

A model sees the frame on a grid of cells (stride 8 at the model's input); an obstacle of a few
hundred pixels far down the road is about one cell, and its evidence is averaged away with the
ground around it. Far obstacles sit in a band of rows (below the horizon, above the near ground),
so the stage cuts that band out of the source frame, magnifies it by `zoom` to the frame's own
height, runs the same model over it in frame-sized tiles (left to right, overlapping when the width
does not divide), and brings the tiles' heatmap back to the band at source resolution. There the
frame's heatmap takes the larger of its own score and the band's, the band's multiplied by `scale`:
a magnified view is smoother than a native one (interpolation adds no detail), so its inlier scores
run lower, and `scale` maps its inlier tail onto the frame pass's (`flowclas-ros zoom` sets it and
the threshold from the user's labelled val, so the inlier false-alarm rate stays what it was).

It costs one model pass per tile (`zoom` 2 on a 4:3 frame: two), on top of the frame's own. It is
carried in the model file (metadata key `zoom_band`, JSON), so node, replay and evaluator all run it
through `Detector`, and a frame gives the same heatmap in each.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import cv2
import numpy as np

from flowclas_ros.runtime.stage_settings import carried, checked_mapping, parse_json

ZOOM_KEY = "zoom_band"  # ONNX metadata key holding the stage's settings (JSON)
MAX_ZOOM = 4.0  # bounds the work: a band `zoom` frames wide, so at most 4 tiles (5 if rounding tips it)


class ZoomBandError(ValueError):
    """Zoomed-band settings that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ZoomBand:
    """Where the band lies and how its scores join the frame's (see the module docstring)."""

    center: float = 0.5  # the band's middle row, as a share of the frame height (0 = top)
    zoom: float = 2.0  # magnification; the band is frame height / zoom rows tall
    scale: float = 1.0  # the band's scores are multiplied by this before they join the frame's

    def __post_init__(self) -> None:
        checks = {"center": 0.0 <= self.center <= 1.0,
                  "zoom": 1.0 < self.zoom <= MAX_ZOOM,
                  "scale": math.isfinite(self.scale) and 0.0 < self.scale <= 100.0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ZoomBandError(f"{ZOOM_KEY}: invalid {', '.join(bad)} "
                                f"({', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}; center 0..1, "
                                f"zoom above 1 up to {MAX_ZOOM:g}, scale above 0 up to 100)")

    def rows(self, height: int) -> tuple[int, int]:
        """The band's first row and its end (exclusive) in a frame `height` rows tall."""
        hb = max(1, min(height, round(height / self.zoom)))
        top = min(height - hb, max(0, round(self.center * height - hb / 2)))
        return top, top + hb

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = ZOOM_KEY) -> "ZoomBand":
        kwargs: dict[str, float] = {}
        for name, v in checked_mapping(cls, data, source, ZoomBandError).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ZoomBandError(f"{source}.{name}: {v!r} is not a number")
            kwargs[name] = float(v)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str, source: str = ZOOM_KEY) -> "ZoomBand":
        return cls.from_dict(parse_json(text, source, ZoomBandError), source)


def zoom_band_of(extra: dict[str, str], source: str) -> Optional[ZoomBand]:
    """The stage a model file carries (its metadata's ``zoom_band``), or None."""
    return carried(extra, ZOOM_KEY, source, ZoomBand.from_json)


def tile_offsets(width: int, zoomed_width: int) -> list[int]:
    """Left edges of frame-wide tiles covering `zoomed_width` columns: as few as cover it, spread
    evenly, so neighbours overlap when the width does not divide."""
    n = max(1, math.ceil(zoomed_width / width))
    return [round(v) for v in np.linspace(0, zoomed_width - width, n)] if n > 1 else [0]


def band_heatmap(rgb: np.ndarray, band: ZoomBand,
                 heatmap_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The band's heatmap at source resolution (unscaled): `heatmap_of` (a frame-sized RGB image
    -> its HxW heatmap, the detector's own path) run on each tile of the magnified band."""
    h, w = rgb.shape[:2]
    top, end = band.rows(h)
    zw = max(w, round(w * h / (end - top)))  # the band magnified to the frame's height
    big = cv2.resize(rgb[top:end], (zw, h), interpolation=cv2.INTER_LINEAR)
    acc = np.zeros((h, zw), np.float32)
    count = np.zeros((1, zw), np.float32)
    for x in tile_offsets(w, zw):
        acc[:, x:x + w] += heatmap_of(np.ascontiguousarray(big[:, x:x + w]))
        count[:, x:x + w] += 1.0
    return cv2.resize(acc / count, (w, end - top), interpolation=cv2.INTER_AREA)


def join_band(heatmap: np.ndarray, band_scores: np.ndarray, band: ZoomBand) -> np.ndarray:
    """The frame's heatmap with the band's rows taking max(own score, `scale` x band score)."""
    top, end = band.rows(heatmap.shape[0])
    out = np.array(heatmap, dtype=np.float32, copy=True)
    np.maximum(out[top:end], band.scale * band_scores, out=out[top:end])
    return out
