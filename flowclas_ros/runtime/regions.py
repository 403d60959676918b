"""Region evidence: a surface enclosed by flagged pixels takes the score of its outline.

Why this exists: the flow scores each cell of the feature grid from local features, so the face
of a large untextured obstacle (a grey cube before a grey wall) reads as a patch of wall and
only its outline, where its shading meets the background, scores high. The outline is the
evidence; this stage lifts the enclosed face to it. It runs on the model's score grid at the
model's input resolution, after the exported graph and before the heatmap is resized to the
frame, inside `Detector`: the node, replay, the evaluator and the demo all get it, and a frame
gives the same heatmap and mask through every one of them.

What it does, per frame (numpy and OpenCV only, no training):

1. outline = pixels scoring at least ``edge_score``, closed by ``close_px`` (a morphological
   close bridges short gaps in an outline);
2. regions = 4-connected components of everything else, optionally also cut by the image's own
   edges (``image_edges``: Canny thresholds on the grey image), so an outline open on one side
   can still be closed by a visible edge of the obstacle;
3. a region is lifted only when it is enclosed (touches no frame border), not too large
   (``max_area``, share of the frame) or tiny (``min_area_px``), of one surface (RGB std of its
   pixels at most ``max_colour_std`` in every channel: texture is not filled) and, with image edges, when at least
   ``min_outline_share`` of its border is flagged (an inlier surface with one flagged edge is
   mostly bordered by its own edges, so it stays as it is);
4. a lifted region's pixels take ``max(score, lift)`` with ``lift`` the mean score of the border
   around it (each score capped at ``border_cap``; bridged gaps and image edges count with their
   own, lower scores): a region enclosed by strong evidence gets a strong score, a faint or
   partly open outline a fainter one.

A textured inlier region beside a flagged edge is never enclosed by flags, or has a colour std
above the limit, so it is not lifted. The settings travel in the model file
(ONNX metadata key ``region_evidence``, JSON), so a model carries the stage it was measured with;
a model without the key runs without it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import cv2
import numpy as np

from flowclas_ros.runtime.stage_settings import carried, checked_mapping, parse_json

REGION_KEY = "region_evidence"  # ONNX metadata key holding the stage's settings (JSON)
MAX_REGIONS = 64  # candidate regions examined per frame, largest first (bounds the work)


class RegionEvidenceError(ValueError):
    """Region-evidence settings that cannot be used; the message names the key."""


@dataclass(frozen=True)
class RegionEvidence:
    """Settings of the region stage (scores in the model's units: the calibrated threshold is the
    model's `threshold`, 1.0 for a model calibrated by `flowclas-ros train`)."""

    edge_score: float = 1.0  # a pixel at or above this score is outline evidence
    close_px: int = 5  # outline gaps up to about this many pixels (model input) are bridged
    image_edges: Optional[tuple[int, int]] = None  # Canny (low, high): image edges also close regions
    min_outline_share: float = 0.0  # share of a region's border that must be flagged
    max_colour_std: float = 6.0  # RGB std (grey levels, worst channel) above which a region is texture
    max_area: float = 0.3  # largest region lifted, as a share of the frame
    min_area_px: int = 4  # smallest region lifted, pixels at the model input
    border_cap: float = 3.0  # border scores are capped here before they are averaged

    def __post_init__(self) -> None:
        checks = {
            "edge_score": math.isfinite(self.edge_score),
            "close_px": 0 <= self.close_px <= 64,
            "min_outline_share": 0.0 <= self.min_outline_share <= 1.0,
            "max_colour_std": self.max_colour_std > 0,
            "max_area": 0.0 < self.max_area <= 1.0,
            "min_area_px": self.min_area_px >= 1,
            "border_cap": math.isfinite(self.border_cap),
            "image_edges": self.image_edges is None or (
                len(self.image_edges) == 2 and 0 <= self.image_edges[0] <= self.image_edges[1] <= 1000),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise RegionEvidenceError(f"region_evidence: invalid {', '.join(bad)} "
                                      f"({', '.join(f'{k}={getattr(self, k)!r}' for k in bad)})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "region_evidence") -> "RegionEvidence":
        data = checked_mapping(cls, data, source, RegionEvidenceError)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            try:
                if f.name == "image_edges":
                    kwargs[f.name] = None if v is None else (int(v[0]), int(v[1]))
                    if v is not None and len(v) != 2:
                        raise ValueError("two Canny thresholds")
                elif f.name in ("close_px", "min_area_px"):
                    if isinstance(v, bool) or int(v) != v:
                        raise ValueError("an integer")
                    kwargs[f.name] = int(v)
                else:
                    if isinstance(v, bool):
                        raise ValueError("a number")
                    kwargs[f.name] = float(v)
            except (TypeError, ValueError, IndexError) as exc:
                raise RegionEvidenceError(f"{source}.{f.name}: {v!r} is not valid ({exc})") from exc
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str, source: str = "region_evidence") -> "RegionEvidence":
        return cls.from_dict(parse_json(text, source, RegionEvidenceError), source)


def region_evidence_of(extra: dict[str, str], source: str) -> Optional[RegionEvidence]:
    """The stage a model file carries (its metadata's ``region_evidence``), or None."""
    return carried(extra, REGION_KEY, source, RegionEvidence.from_json)


def lift_regions(score: np.ndarray, rgb: np.ndarray, cfg: RegionEvidence) -> np.ndarray:
    """The score map with every enclosed, single-surface region lifted to its outline's score.

    ``score``: HxW float32 at the model's input resolution (the content box); ``rgb``: the frame
    resized to the same HxW, uint8. Returns a new array (the input is not changed); a frame with
    no flagged pixel or no candidate region comes back as a copy of ``score``. Work is bounded:
    one morphological close and one connected-components pass over the frame, then each of at
    most ``MAX_REGIONS`` candidate regions (the largest) inside its own box.
    """
    h, w = score.shape
    out = np.array(score, dtype=np.float32, copy=True)
    flagged = (score >= cfg.edge_score).astype(np.uint8)
    if not flagged.any():
        return out
    outline = flagged
    if cfg.close_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.close_px, cfg.close_px))
        outline = cv2.morphologyEx(flagged, cv2.MORPH_CLOSE, kernel)
    barrier = outline
    if cfg.image_edges is not None:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        barrier = outline | (cv2.Canny(grey, *cfg.image_edges) > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - barrier, connectivity=4)
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    candidate = ((x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
                 & (area >= cfg.min_area_px) & (area <= cfg.max_area * h * w))
    candidate[0] = False  # the barrier itself
    ring_kernel = np.ones((3, 3), np.uint8)
    for k in sorted(np.flatnonzero(candidate), key=lambda k: -area[k])[:MAX_REGIONS]:
        # the region's box grown by one pixel (a candidate never touches the frame border)
        y0, y1, x0, x1 = y[k] - 1, y[k] + bh[k] + 1, x[k] - 1, x[k] + bw[k] + 1
        inside = labels[y0:y1, x0:x1] == k
        if float(rgb[y0:y1, x0:x1][inside].std(axis=0).max()) > cfg.max_colour_std:
            continue  # texture, not one surface
        ring = (cv2.dilate(inside.view(np.uint8), ring_kernel) > 0) & ~inside
        ring &= barrier[y0:y1, x0:x1] > 0
        if not ring.any():
            continue
        if cfg.min_outline_share > 0 and float(flagged[y0:y1, x0:x1][ring].mean()) < cfg.min_outline_share:
            continue  # mostly closed by the image's own edges, not by evidence
        lift = np.float32(np.minimum(score[y0:y1, x0:x1][ring], cfg.border_cap).mean())
        # the region and the outline gaps the close bridged around it
        lifted = inside | (ring & (outline[y0:y1, x0:x1] > flagged[y0:y1, x0:x1]))
        box = out[y0:y1, x0:x1]
        box[lifted] = np.fmax(box[lifted], lift)  # fmax: a non-finite border lifts nothing
    return out
