"""The one copy of pre- and post-processing.

The node, the replay tool, the evaluator and the trainer all call these functions, so a frame gives
the same heatmap offline and on the robot.

Resize policy (stored in the model file):
  - `stretch`: the frame is resized to the model's input size, aspect ratio not kept. Right when the
    camera and the model share an aspect ratio (4:3 camera, 240x320 model); the heatmap is resized
    back, so geometry is exact up to interpolation.
  - `letterbox`: the frame is scaled to fit, keeping its aspect ratio, and centred on a canvas of the
    normalisation mean (zeros after normalisation); the padding is cropped from the score map
    before it is resized back, so padding never produces detections.
Downscaling uses INTER_AREA (anti-aliased), upscaling INTER_LINEAR; labels use INTER_NEAREST.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from flowclas_ros.runtime.labels import VOID


@dataclass(frozen=True)
class Geometry:
    """How a source frame maps onto the model input: content box (top, left, height, width)."""

    src_hw: tuple[int, int]
    input_hw: tuple[int, int]
    top: int
    left: int
    content_hw: tuple[int, int]


def fit_geometry(src_hw: tuple[int, int], input_hw: tuple[int, int], policy: str) -> Geometry:
    h, w = src_hw
    ih, iw = input_hw
    if policy == "stretch":
        return Geometry((h, w), (ih, iw), 0, 0, (ih, iw))
    if policy == "letterbox":
        s = min(ih / h, iw / w)
        ch, cw = max(1, min(ih, round(h * s))), max(1, min(iw, round(w * s)))
        return Geometry((h, w), (ih, iw), (ih - ch) // 2, (iw - cw) // 2, (ch, cw))
    raise ValueError(f"unknown resize policy '{policy}' (stretch or letterbox)")


def _resize(img: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if img.shape[:2] == tuple(hw):
        return img
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if hw[0] < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (hw[1], hw[0]), interpolation=interp)


def place(img: np.ndarray, geom: Geometry, fill: float | Sequence[float],
          nearest: bool = False) -> np.ndarray:
    """Resize `img` into the geometry's content box on a canvas of `fill`."""
    content = _resize(img, geom.content_hw, nearest=nearest)
    if geom.content_hw == geom.input_hw:
        return content
    shape = (*geom.input_hw, *img.shape[2:])
    canvas = np.empty(shape, dtype=img.dtype)
    canvas[...] = fill
    t, l = geom.top, geom.left
    canvas[t:t + geom.content_hw[0], l:l + geom.content_hw[1]] = content
    return canvas


def preprocess(rgb: np.ndarray, input_hw: tuple[int, int], mean: Sequence[float],
               std: Sequence[float], policy: str) -> tuple[np.ndarray, Geometry]:
    """HxWx3 uint8 RGB -> ([3,H,W] float32 normalised, geometry)."""
    x, geom, _ = preprocess_with_image(rgb, input_hw, mean, std, policy)
    return x, geom


def preprocess_with_image(rgb: np.ndarray, input_hw: tuple[int, int], mean: Sequence[float],
                          std: Sequence[float], policy: str) -> tuple[np.ndarray, Geometry, np.ndarray]:
    """`preprocess`, plus the frame as placed on the model input (HxWx3 uint8): what a stage
    after the model that looks at the image (runtime/regions.py) sees, pixel for pixel."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"preprocess expects HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    geom = fit_geometry(rgb.shape[:2], tuple(input_hw), policy)
    mean255 = [255.0 * m for m in mean]
    placed = place(rgb, geom, fill=[round(v) for v in mean255])
    scale = np.asarray([1.0 / (255.0 * s) for s in std], np.float32)
    offset = np.asarray([m / s for m, s in zip(mean, std)], np.float32)
    x = placed.astype(np.float32) * scale - offset
    return np.ascontiguousarray(x.transpose(2, 0, 1)), geom, placed


def content_box(img: np.ndarray, geom: Geometry) -> np.ndarray:
    """The part of a model-input-sized array that holds the frame (a view: letterbox padding cut)."""
    t, l = geom.top, geom.left
    ch, cw = geom.content_hw
    return img[t:t + ch, l:l + cw]


def label_to_input(label: np.ndarray, geom: Geometry) -> np.ndarray:
    """Pixel labels (0/1/255) onto the model grid; letterbox padding becomes void."""
    return place(label, geom, fill=VOID, nearest=True)


def heatmap_to_source(score: np.ndarray, geom: Geometry) -> np.ndarray:
    """Model-resolution score map [H,W] -> float32 heatmap at the source frame's resolution."""
    crop = np.ascontiguousarray(content_box(score, geom), dtype=np.float32)
    h, w = geom.src_hw
    if crop.shape == (h, w):
        return crop
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Obstacle:
    """One connected obstacle region of the thresholded heatmap (pixel units of the source)."""

    x: int
    y: int
    width: int
    height: int
    area: int
    peak_score: float
    mean_score: float


def threshold_components(heatmap: np.ndarray, threshold: float,
                         min_area: int) -> tuple[np.ndarray, list[Obstacle]]:
    """mask (uint8 0/255) = heatmap >= threshold, minus 8-connected components smaller than
    `min_area` pixels; plus the surviving components sorted by peak score (highest first)."""
    binary = (heatmap >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    obstacles: list[Obstacle] = []
    drop = np.zeros(n, dtype=bool)
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < min_area:
            drop[k] = True
            continue
        # Reduced under a mask, not copied out: a frame-sized component (8K: 33 M pixels) would
        # otherwise cost a float32 copy of itself.
        sub, inside = heatmap[y:y + h, x:x + w], labels[y:y + h, x:x + w] == k
        peak = float(np.max(sub, where=inside, initial=-np.inf))
        mean = float(np.sum(sub, where=inside, dtype=np.float64)) / area
        obstacles.append(Obstacle(x, y, w, h, area, peak, mean))
    if drop.any():
        binary[drop[labels]] = 0
    obstacles.sort(key=lambda o: -o.peak_score)
    binary *= np.uint8(255)
    return binary, obstacles
