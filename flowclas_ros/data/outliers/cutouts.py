"""Outlier exposure: paste object cut-outs into inlier frames and label them anomalous.

Why this exists: FlowCLAS trains its contrastive head on synthetic anomalies.
As in PEBAL / RbA, cut-outs are pasted unblended (only mask pixels copied) and
the pasted pixels become label 1, overriding inlier and void labels.

Cut-outs are stored as RGBA PNGs whose alpha is the object mask, so a bank is
just a directory anyone can fill (COCO instances, toy shapes, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from flowclas_ros.data.files import DatasetError, decode_file, write_png
from flowclas_ros.runtime.labels import ANOMALY

__all__ = [
    "Cutout",
    "CutoutBank",
    "PasteConfig",
    "camouflage",
    "load_cutout",
    "paste_cutout",
    "paste_outliers",
    "random_orientation",
    "resize_cutout",
    "save_cutout",
    "trim_cutout",
]

PathLike = str | Path


@dataclass(frozen=True, eq=False)
class Cutout:
    """An object patch: ``rgb`` hxwx3 uint8 and its ``mask`` hxw bool (True = object)."""

    rgb: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"Cutout.rgb must be hxwx3 uint8, got {self.rgb.dtype} {self.rgb.shape}")
        if self.mask.dtype != np.bool_ or self.mask.shape != self.rgb.shape[:2]:
            raise ValueError(
                f"Cutout.mask must be bool with shape {self.rgb.shape[:2]}, "
                f"got {self.mask.dtype} {self.mask.shape}"
            )


def trim_cutout(cutout: Cutout) -> Cutout:
    """Crop to the mask's bounding box, so a cut-out's size means the object's size."""
    rows = np.flatnonzero(cutout.mask.any(axis=1))
    cols = np.flatnonzero(cutout.mask.any(axis=0))
    if rows.size == 0:
        return cutout
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Cutout(np.ascontiguousarray(cutout.rgb[box]), np.ascontiguousarray(cutout.mask[box]))


def save_cutout(path: PathLike, cutout: Cutout) -> None:
    """Write an RGBA PNG: alpha 255 on the mask, 0 elsewhere."""
    alpha = np.where(cutout.mask, np.uint8(255), np.uint8(0))
    write_png(path, np.dstack([cutout.rgb, alpha]))


def load_cutout(path: PathLike) -> Cutout:
    """Read an RGBA PNG cut-out (alpha > 127 is the mask), trimmed to the mask."""
    raw = decode_file(path, cv2.IMREAD_UNCHANGED)
    if raw.ndim != 3 or raw.shape[2] != 4:
        raise ValueError(f"cut-out {path} has no alpha channel (the alpha channel is the object mask)")
    if raw.dtype != np.uint8:
        raise ValueError(f"cut-out {path} must be 8-bit RGBA, got {raw.dtype}")
    rgba = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA)
    mask = rgba[..., 3] > 127
    if not mask.any():
        raise ValueError(f"cut-out {path} has an empty mask (no alpha > 127)")
    return trim_cutout(Cutout(np.ascontiguousarray(rgba[..., :3]), mask))


class CutoutBank:
    """An in-memory, indexable set of cut-outs to sample outliers from."""

    def __init__(self, cutouts: Sequence[Cutout]) -> None:
        self._cutouts = tuple(cutouts)
        if not self._cutouts:
            raise ValueError("a CutoutBank needs at least one cut-out")

    @classmethod
    def from_dir(cls, path: PathLike) -> CutoutBank:
        """Load every ``*.png`` in ``path`` (sorted, so indices are reproducible)."""
        return cls([load_cutout(f) for f in cutout_files(path)])

    def __len__(self) -> int:
        return len(self._cutouts)

    def __getitem__(self, index: int) -> Cutout:
        return self._cutouts[index]

    def sample(self, rng: np.random.Generator) -> Cutout:
        """Pick one cut-out uniformly."""
        return self._cutouts[int(rng.integers(len(self._cutouts)))]


SIZE_SAMPLINGS = ("uniform", "log_uniform")


def draw_scale(rng: np.random.Generator, scale: tuple[float, float], sampling: str = "uniform") -> float:
    """A pasted outlier's size (fraction of the shorter image side) in ``scale``.

    log_uniform draws as many sizes per octave for small outliers as for large ones, so outlier
    exposure covers the small and far obstacles a uniform draw over the same range almost never gives.
    """
    if sampling == "log_uniform":
        return float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    return float(rng.uniform(*scale))


def cutout_files(path: PathLike) -> list[Path]:
    """The ``*.png`` cut-outs of a bank directory, sorted; a DatasetError naming the directory
    when it is missing, not a directory or empty. Cheap, so training checks the bank before the
    long steps (extracting frames from bags) rather than failing after them."""
    path = Path(path)
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DatasetError(f"outlier_exposure.bank: cut-out directory {path} {problem}")
    files = sorted(path.glob("*.png"))
    if not files:
        raise DatasetError(f"outlier_exposure.bank: cut-out directory {path} contains no *.png files")
    return files


def kind_weights(value: Mapping[str, float] | tuple, kinds: tuple[str, ...], what: str) -> tuple:
    """A {kind: weight} mapping (or its tuple-of-pairs form) as ((kind, weight), ...) in ``kinds``
    order, kinds left out at 0; ValueError naming ``what`` for unknown kinds, negative or
    non-finite weights, or no positive weight (the form configs keep hashable)."""
    items = dict(value.items() if isinstance(value, Mapping) else value)
    unknown = sorted(set(items) - set(kinds))
    if unknown:
        raise ValueError(f"{what}: unknown kind(s) {unknown}; expected {kinds}")
    weights = tuple((k, float(items.get(k, 0.0))) for k in kinds)
    if any(not math.isfinite(v) or v < 0 for _, v in weights) or sum(v for _, v in weights) <= 0:
        raise ValueError(f"{what} must be finite weights >= 0 with a positive sum, got {dict(items)!r}")
    return weights


def as_pair(value: Sequence, what: str) -> tuple:
    """(low, high) from a 2-sequence; ValueError naming the setting (e.g. 'PasteConfig.scale')."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (low, high) pair, got {value!r}") from None
    return lo, hi


@dataclass(frozen=True)
class PasteConfig:
    """How outliers are pasted.

    ``count`` is the inclusive range of cut-outs per pasted frame; ``scale`` the
    range of a cut-out's longest side as a fraction of the image's shorter side.
    """

    probability: float = 0.5
    count: tuple[int, int] = (1, 2)
    scale: tuple[float, float] = (0.1, 0.4)
    rotate: bool = True
    size_sampling: str = "uniform"  # or log_uniform (see draw_scale)
    camouflage: float = 0.0  # share of cut-outs recoloured from the frame (see camouflage)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"PasteConfig.probability must be in [0, 1], got {self.probability!r}")
        count = as_pair(self.count, "PasteConfig.count")
        integral = all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in count)
        if not integral or not 1 <= count[0] <= count[1]:
            raise ValueError(f"PasteConfig.count must be integers with 1 <= low <= high, got {self.count!r}")
        scale = as_pair(self.scale, "PasteConfig.scale")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"PasteConfig.scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        if isinstance(self.camouflage, bool) or not 0.0 <= self.camouflage <= 1.0:
            raise ValueError(f"PasteConfig.camouflage must be in [0, 1], got {self.camouflage!r}")
        if self.size_sampling not in SIZE_SAMPLINGS:
            raise ValueError(f"PasteConfig.size_sampling must be one of {SIZE_SAMPLINGS}, got {self.size_sampling!r}")
        if not isinstance(self.rotate, bool):
            raise ValueError(f"PasteConfig.rotate must be a bool, got {self.rotate!r}")
        # Normalise lists (e.g. from YAML) to tuples so the config stays hashable.
        object.__setattr__(self, "count", (int(count[0]), int(count[1])))
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))


def random_orientation(cutout: Cutout, rng: np.random.Generator) -> Cutout:
    """Apply one of the 8 rotations/flips, so a small bank yields more variety."""
    turns = int(rng.integers(4))
    flip = bool(rng.random() < 0.5)
    rgb, mask = np.rot90(cutout.rgb, turns), np.rot90(cutout.mask, turns)
    if flip:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    return Cutout(np.ascontiguousarray(rgb), np.ascontiguousarray(mask))


def camouflage(cutout: Cutout, image: np.ndarray, rng: np.random.Generator) -> Cutout:
    """The cut-out's shading in a colour taken from the frame it goes into.

    Why: a bank of colourful objects teaches "colourful = obstacle", and the obstacles a detector
    misses are the grey box on a grey floor or the rock-coloured crate on regolith. Keeping the
    object's luminance structure (edges, shading) but giving it the colour of a random pixel of
    the frame makes outlier exposure cover obstacles that differ from the scene by shape and
    shading alone.
    """
    height, width = image.shape[:2]
    colour = image[int(rng.integers(height)), int(rng.integers(width))].astype(np.float32)
    luminance = cutout.rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    mean = float(luminance[cutout.mask].mean()) if cutout.mask.any() else 128.0
    shading = luminance / max(mean, 1.0)
    rgb = np.clip(shading[..., None] * colour[None, None, :] * rng.uniform(0.8, 1.2), 0, 255)
    return Cutout(rgb.astype(np.uint8), cutout.mask)


def resize_cutout(cutout: Cutout, long_side: float, max_hw: tuple[int, int]) -> Cutout:
    """Resize so the longest side is ``long_side`` px, shrinking further to fit ``max_hw``."""
    h, w = cutout.mask.shape
    factor = min(long_side / max(h, w), max_hw[0] / h, max_hw[1] / w)
    new_h = min(max_hw[0], max(1, round(h * factor)))
    new_w = min(max_hw[1], max(1, round(w * factor)))
    if (new_h, new_w) == (h, w):
        return cutout
    rgb = cv2.resize(cutout.rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(cutout.mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any() and cutout.mask.any():
        # Nearest sampling can miss a thin object entirely; keep its densest pixel(s).
        coverage = cv2.resize(cutout.mask.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
        mask = coverage >= coverage.max()
    return Cutout(rgb, mask)


def paste_cutout(image: np.ndarray, label: np.ndarray | None, cutout: Cutout, top_left: tuple[int, int]) -> None:
    """Copy the cut-out's mask pixels into ``image`` IN PLACE and mark them ``ANOMALY`` in ``label``.

    ``top_left`` is (row, col); the cut-out must lie fully inside the image.
    """
    top, left = int(top_left[0]), int(top_left[1])
    h, w = cutout.mask.shape
    height, width = image.shape[:2]
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"a {h}x{w} cut-out at {(top, left)} does not fit in a {height}x{width} image")
    region = (slice(top, top + h), slice(left, left + w))
    image[region][cutout.mask] = cutout.rgb[cutout.mask]
    if label is not None:
        label[region][cutout.mask] = ANOMALY


def start_paste(image: np.ndarray, label: np.ndarray | None, probability: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Shared start of every OE paste: check the frame, copy image and label (zeros when None),
    and draw whether this frame gets a paste (one random number, always drawn)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    if label is not None and label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")
    out_label = np.zeros(image.shape[:2], np.uint8) if label is None else label.astype(np.uint8, copy=True)
    return image.copy(), out_label, bool(rng.random() < probability)


def paste_outliers(
    image: np.ndarray,
    label: np.ndarray | None,
    bank: CutoutBank,
    cfg: PasteConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """With probability ``cfg.probability`` paste random cut-outs; returns new (image, label, pasted)."""
    out_image, out_label, go = start_paste(image, label, cfg.probability, rng)
    if not go:
        return out_image, out_label, False
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(cfg.count[0], cfg.count[1] + 1))):
        cutout = bank.sample(rng)
        if cfg.rotate:
            cutout = random_orientation(cutout, rng)
        if cfg.camouflage > 0 and rng.random() < cfg.camouflage:
            cutout = camouflage(cutout, image, rng)
        cutout = resize_cutout(cutout, draw_scale(rng, cfg.scale, cfg.size_sampling) * min(height, width),
                               (height, width))
        h, w = cutout.mask.shape
        top_left = (int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)))
        paste_cutout(out_image, out_label, cutout, top_left)
    return out_image, out_label, True
