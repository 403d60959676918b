"""Operator-facing rendering: the frame blended with a colour map of the score + mask contours.

RViz's Image display shows 32FC1 as grey with no colour map, so the overlay (bgr8) is what an
operator watches; the node, the replay tool and the demo all render it here.
"""
from __future__ import annotations

import cv2
import numpy as np


def colorize(heatmap: np.ndarray, vmax: float) -> np.ndarray:
    """Score -> bgr8 with the TURBO colour map, 0 -> blue, >= vmax -> red."""
    scaled = np.clip(heatmap * (255.0 / max(vmax, 1e-6)), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)


_BAND_ROWS = 256


def _blend(bgr: np.ndarray, heat: np.ndarray, t: float, alpha: float) -> np.ndarray:
    """bgr8 pixels (Nx3 or HxWx3) blended with the colour-mapped score (N or HxW)."""
    weight = (alpha * np.clip(heat / t - 0.5, 0.0, 1.0))[..., None]
    color = colorize(heat[..., None] if heat.ndim == 1 else heat, 2.0 * t).astype(np.float32)
    if heat.ndim == 1:
        color = color[:, 0]
    return (bgr.astype(np.float32) * (1 - weight) + color * weight).astype(np.uint8)


def render_overlay(rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray, threshold: float,
                   alpha: float = 0.45) -> np.ndarray:
    """bgr8 overlay: the frame, the colour-mapped score blended where the score is above half the
    threshold (so inliers stay readable), and white contours around obstacle-mask components.

    Only the pixels above half the threshold (usually a small part of the frame) are blended, which
    costs a fraction of a full-frame float blend."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    t = max(threshold, 1e-6)
    sel = heatmap > 0.5 * t
    n = int(np.count_nonzero(sel))
    if alpha > 0 and n:
        # Few pixels: blend just those; once they are a sizeable part of the frame, gathering them
        # costs more than a full-frame blend, done in bands of rows so that an 8K frame needs
        # megabytes of float temporaries, not gigabytes. Both branches give identical pixels.
        if n < sel.size // 8:
            out[sel] = _blend(out[sel], heatmap[sel], t, alpha)
        else:
            for r in range(0, out.shape[0], _BAND_ROWS):
                out[r:r + _BAND_ROWS] = _blend(out[r:r + _BAND_ROWS], heatmap[r:r + _BAND_ROWS], t, alpha)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
    return out


def montage(tiles: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Grid of same-size images (bgr8); short rows are padded with black."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = cv2.resize(t, (w, h)) if t.shape[:2] != (h, w) else t
    return grid
