"""The `flow_patches` OE source: pasting a bank of flow-generated image patches (NFlowJS style).

The bank (square uint8 RGB patches at a few sides, e.g. 32 / 64 / 128 px) is sampled once per
training source by a flow of the frames' own patches (training/outliers/flow_patch_bank.py); this module
only reads and pastes it, with numpy + OpenCV, deterministically given an ``np.random.Generator``:

- a target box is drawn as for procedural blobs: longest side ``scale`` x the shorter image side,
  the other side 0.5-1x of it, so small (far) and large (near) pastes both occur;
- the bank patch with the smallest side >= the box's longest side is used (else the largest), in
  one of the 8 orientations, resized to the box, so a patch is rarely magnified and its texture
  keeps the frames' pixel scale;
- the mask is a random ``ellipse``, ``polygon`` (5-10 vertices around the centre) or noise-shaped
  ``blob`` (data/outliers/procedural_anomalies.py's :func:`blob_mask`), drawn with the ``shapes`` weights;
- a paste whose mean change over its mask is below ``min_change`` grey levels (a patch that
  happens to match the background under it) is moved, up to 4 tries, else dropped: pixels no one
  can see as anomalous must not be labelled anomaly.

Label contract: the same as cut-outs (data/outliers/cutouts.py): new arrays are returned, mask pixels are
pasted unblended and labelled 1 (anomaly), overriding inlier and void labels. The camera model of
the training frames (``augmentation``) applies after the paste, to patches and frames alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

import cv2
import numpy as np

from flowclas_ros.data.files import DatasetError, PathLike
from flowclas_ros.data.outliers.cutouts import (
    Cutout,
    as_pair,
    kind_weights,
    paste_cutout,
    random_orientation,
    start_paste,
)
from flowclas_ros.data.outliers.procedural_anomalies import blob_mask

__all__ = ["SHAPE_KINDS", "FlowPatchConfig", "PatchBank", "paste_flow_patches", "shape_mask"]

SHAPE_KINDS: tuple[str, ...] = ("ellipse", "polygon", "blob")
_TRIES = 4


class PatchBank:
    """Square uint8 RGB patches grouped by side: ``{side: array [n, side, side, 3]}``."""

    def __init__(self, patches: Mapping[int, np.ndarray]) -> None:
        self.patches = {int(s): np.ascontiguousarray(a) for s, a in sorted(patches.items()) if len(a)}
        if not self.patches:
            raise ValueError("a PatchBank needs at least one patch")
        for side, a in self.patches.items():
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (side, side, 3):
                raise ValueError(f"PatchBank: patches of side {side} must be uint8 [n, {side}, {side}, 3], "
                                 f"got {a.dtype} {a.shape}")
        self.sides = np.array(sorted(self.patches))

    def __len__(self) -> int:
        return sum(len(a) for a in self.patches.values())

    def save(self, path: PathLike | BinaryIO) -> None:
        """Write an .npz (one array per side, ``s32``, ``s64``, ...) to a path or an open file."""
        np.savez(path, **{f"s{side}": a for side, a in self.patches.items()})

    @classmethod
    def load(cls, path: PathLike) -> PatchBank:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls({int(k[1:]): npz[k] for k in npz.files if k.startswith("s")})
        except (OSError, ValueError) as exc:
            raise DatasetError(f"flow-patch bank {path} is unreadable ({exc}); delete it to regenerate") from None

    def pick(self, long_side: float, rng: np.random.Generator) -> np.ndarray:
        """A random patch of the smallest side >= ``long_side`` (else of the largest side)."""
        fits = self.sides[self.sides >= long_side]
        side = int(fits[0] if fits.size else self.sides[-1])
        group = self.patches[side]
        return group[int(rng.integers(len(group)))]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class FlowPatchConfig:
    """How flow patches are pasted (module docstring): ``probability`` that a frame gets any,
    ``count`` patches per pasted frame, ``scale`` range of the box's longest side / the shorter
    image side, ``shapes`` mask-kind weights (a mapping, stored as pairs), ``min_change`` mean
    grey-level change a paste must make (0 = off)."""

    probability: float = 0.5
    count: tuple[int, int] = (1, 2)
    scale: tuple[float, float] = (0.03, 0.4)
    shapes: Mapping[str, float] | tuple = (("ellipse", 1.0), ("polygon", 1.0), ("blob", 1.0))
    min_change: float = 16.0

    def __post_init__(self) -> None:
        if isinstance(self.probability, bool) or not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"FlowPatchConfig.probability must be in [0, 1], got {self.probability!r}")
        count = as_pair(self.count, "FlowPatchConfig.count")
        if not all(_is_int(c) for c in count) or not 1 <= count[0] <= count[1]:
            raise ValueError(f"FlowPatchConfig.count must be integers with 1 <= low <= high, got {self.count!r}")
        scale = as_pair(self.scale, "FlowPatchConfig.scale")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"FlowPatchConfig.scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        weights = kind_weights(self.shapes, SHAPE_KINDS, "FlowPatchConfig.shapes")
        if not 0.0 <= float(self.min_change) <= 255.0:
            raise ValueError(f"FlowPatchConfig.min_change must be in [0, 255], got {self.min_change!r}")
        object.__setattr__(self, "count", (int(count[0]), int(count[1])))
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))
        object.__setattr__(self, "shapes", weights)
        object.__setattr__(self, "min_change", float(self.min_change))

    @property
    def shape_probabilities(self) -> np.ndarray:
        w = np.array([v for _, v in self.shapes], np.float64)
        return w / w.sum()


def shape_mask(shape: tuple[int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """A random bool mask of ``shape`` (h, w) filling much of its box: an ``ellipse`` (the
    inscribed one, randomly shrunk 0.8-1x), a ``polygon`` (5-10 vertices at random radii 0.5-1 of
    the box around its centre, in angular order) or a noise-shaped ``blob`` (coverage 0.4-0.7)."""
    h, w = int(shape[0]), int(shape[1])
    if kind == "blob":
        return blob_mask((h, w), rng.uniform(0.4, 0.7), rng)
    canvas = np.zeros((h, w), np.uint8)
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    if kind == "ellipse":
        axes = (max(1, round(w / 2 * rng.uniform(0.8, 1.0))), max(1, round(h / 2 * rng.uniform(0.8, 1.0))))
        cv2.ellipse(canvas, (round(centre[0]), round(centre[1])), axes, 0.0, 0.0, 360.0, 1, -1)
    elif kind == "polygon":
        n = int(rng.integers(5, 11))
        angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
        radii = rng.uniform(0.5, 1.0, n)
        pts = np.stack([centre[0] + radii * np.cos(angles) * w / 2, centre[1] + radii * np.sin(angles) * h / 2], 1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")
    mask = canvas.astype(bool)
    if not mask.any():
        mask[h // 2, w // 2] = True
    return mask


def paste_flow_patches(image: np.ndarray, label: np.ndarray | None, bank: PatchBank, cfg: FlowPatchConfig,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """With probability ``cfg.probability`` paste ``cfg.count`` flow patches; returns new
    (image, label, pasted) with the pasted pixels labelled anomaly (module docstring)."""
    out, out_label, go = start_paste(image, label, cfg.probability, rng)
    if not go:
        return out, out_label, False
    height, width = image.shape[:2]
    probs = cfg.shape_probabilities
    pasted = False
    for _ in range(int(rng.integers(cfg.count[0], cfg.count[1] + 1))):
        long_side = rng.uniform(*cfg.scale) * min(height, width)
        short_side = long_side * rng.uniform(0.5, 1.0)
        hw = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
        h = int(min(height, max(2, round(hw[0]))))
        w = int(min(width, max(2, round(hw[1]))))
        patch = bank.pick(max(h, w), rng)
        side = patch.shape[0]
        oriented = random_orientation(Cutout(patch, np.ones((side, side), bool)), rng).rgb
        interp = cv2.INTER_AREA if side > max(h, w) else cv2.INTER_LINEAR
        rgb = cv2.resize(oriented, (w, h), interpolation=interp)
        kind = SHAPE_KINDS[int(rng.choice(len(SHAPE_KINDS), p=probs))]
        cutout = Cutout(rgb, shape_mask((h, w), kind, rng))
        for _try in range(_TRIES):
            top, left = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
            under = out[top:top + h, left:left + w][cutout.mask].astype(np.int16)
            change = float(np.abs(rgb[cutout.mask].astype(np.int16) - under).mean())
            if change >= cfg.min_change:
                paste_cutout(out, out_label, cutout, (top, left))
                pasted = True
                break
    return out, out_label, pasted
