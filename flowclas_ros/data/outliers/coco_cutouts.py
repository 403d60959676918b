"""COCO as the outlier-exposure source, as PEBAL / RbA / Mask2Anomaly use it.

Why this exists: the anchors paste COCO objects that cannot be mistaken for road-scene classes.
From ``instances_train2017.json`` we keep the images that contain NONE of :data:`EXCLUDED_CLASSES`
and whose shorter side is at least ``min_side``, merge all their instance masks (crowd ones too:
they are objects) into one object mask, crop it to its bounding box and save it as an RGBA
cut-out (alpha = mask) with :func:`flowclas_ros.data.outliers.save_cutout`, so the output
directory is directly a :class:`~flowclas_ros.data.outliers.CutoutBank`.

Segmentations are rasterised without pycocotools: polygons with ``cv2.fillPoly`` (supersampled to
follow COCO's pixel-centre convention, see :func:`polygons_to_mask`), RLE (uncompressed ``counts`` lists and COCO's compressed ``counts`` strings)
with the pure-numpy decoder below.

Command line: ``python -m flowclas_ros.data.outliers.coco_cutouts INSTANCES_JSON IMAGES_DIR OUT_DIR [--min-side 480] [--limit N]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from flowclas_ros.data.files import DatasetError, PathLike, read_image_rgb
from flowclas_ros.data.outliers.cutouts import Cutout, save_cutout, trim_cutout

__all__ = [
    "EXCLUDED_CLASSES",
    "coco_cutouts",
    "decode_rle",
    "decode_rle_string",
    "polygons_to_mask",
    "segmentation_to_mask",
]

#: Road-scene classes: a COCO image showing any of them is not an outlier source.
EXCLUDED_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign",
)


def decode_rle_string(counts: str) -> list[int]:
    """Decode COCO's compressed RLE ``counts`` string (pycocotools' ``rleFrString``) to run lengths.

    Each count is a little-endian sequence of 5-bit groups stored as ``chr(48 + group)``, bit 0x20
    meaning "more groups follow" and bit 0x10 of the last group the sign; from the fourth count on,
    the value is a delta to the count two places earlier.
    """
    runs: list[int] = []
    value, shift = 0, 0
    for position, char in enumerate(counts):
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise DatasetError(f"invalid character {char!r} at {position} in a compressed RLE string")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift  # sign-extend the last group
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise DatasetError("compressed RLE string ends inside a count")
    return runs


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE ``{"size": [h, w], "counts": list | str}`` to an HxW bool mask.

    Runs alternate background / object starting with background, over the pixels in column-major
    (Fortran) order, as in pycocotools.
    """
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"malformed RLE segmentation (need 'size' [h, w] and 'counts'): {rle!r:.200}") from None
    runs = np.asarray(decode_rle_string(counts) if isinstance(counts, str) else counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != height * width:
        raise DatasetError(
            f"RLE counts must be non-negative run lengths summing to {height}x{width}={height * width}, "
            f"got {runs.size} runs summing to {int(runs.sum()) if runs.ndim == 1 else '?'}"
        )
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
    return flat.reshape(width, height).T


#: Polygons are filled at this many sub-pixels per pixel (odd, so one sub-pixel sits on each pixel centre).
_POLYGON_SUPERSAMPLE = 7


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (``[x1, y1, x2, y2, ...]`` each) into one HxW bool mask (their union).

    COCO's convention (pycocotools): pixel (row i, col j) spans [j, j+1) x [i, i+1) and belongs
    to the polygon when its centre does, so the rectangle with corners (5, 3) and (15, 11) covers
    columns 5-14 and rows 3-10. ``cv2.fillPoly`` instead fills every pixel the outline touches;
    filling a 7x supersampled grid and reading the sub-pixel at each pixel centre keeps that
    boundary effect below 1/7 px.
    """
    scale = _POLYGON_SUPERSAMPLE
    mask = np.zeros((height, width), bool)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64)
        if points.ndim != 1 or points.size % 2 or not np.isfinite(points).all():
            raise DatasetError(f"COCO polygon must be a flat [x1, y1, x2, y2, ...] list, got {polygon!r:.200}")
        if points.size < 6:
            continue  # fewer than 3 vertices: no area
        vertices = points.reshape(-1, 2)
        col0, row0 = (max(0, int(np.floor(v))) for v in vertices.min(axis=0))
        col1 = min(width, int(np.ceil(vertices[:, 0].max())) + 1)
        row1 = min(height, int(np.ceil(vertices[:, 1].max())) + 1)
        if col0 >= col1 or row0 >= row1:
            continue  # entirely outside the image
        fine = np.zeros(((row1 - row0) * scale, (col1 - col0) * scale), np.uint8)
        # fine pixel k is centred on coordinate (k + 0.5) / scale: map x -> x * scale - 0.5
        fine_vertices = np.round((vertices - (col0, row0)) * scale - 0.5).astype(np.int32)
        cv2.fillPoly(fine, [fine_vertices], 1)  # one polygon per call: parts are unioned, never XOR-ed
        mask[row0:row1, col0:col1] |= fine[scale // 2 :: scale, scale // 2 :: scale].astype(bool)
    return mask


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """An annotation's ``segmentation`` (polygon list or RLE dict) as an HxW bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        mask = decode_rle(segmentation)
        if mask.shape != (height, width):
            raise DatasetError(f"RLE size {mask.shape} does not match the image size {(height, width)}")
        return mask
    raise DatasetError(f"unsupported COCO segmentation type {type(segmentation).__name__}")


def _load_instances(path: Path) -> tuple[list[dict], dict[int, list[dict]], set[int]]:
    """(images, annotations by image id, excluded category ids) of a COCO instances file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise DatasetError(f"cannot read COCO instances file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"COCO instances file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{path} is not a COCO instances file (needs 'images', 'annotations', 'categories' lists)")
    category_ids = {c["name"]: c["id"] for c in data["categories"]}
    missing = [name for name in EXCLUDED_CLASSES if name not in category_ids]
    if missing:
        raise DatasetError(f"{path} has no categories {missing}: cannot exclude road-scene images")
    excluded = {category_ids[name] for name in EXCLUDED_CLASSES}
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    return sorted(data["images"], key=lambda image: image["id"]), by_image, excluded


def coco_cutouts(
    instances_json: PathLike,
    images_dir: PathLike,
    out_dir: PathLike,
    min_side: int = 480,
    limit: int | None = None,
) -> list[Path]:
    """Write one RGBA cut-out ``out_dir/{image stem}.png`` per eligible COCO image; return their paths.

    Eligible: annotated, none of its annotations is an :data:`EXCLUDED_CLASSES` class, and
    ``min(height, width) >= min_side``. Images are visited in image-id order and at most ``limit``
    cut-outs are written (None: all).
    """
    instances_json, images_dir, out_dir = Path(instances_json), Path(images_dir), Path(out_dir)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    images, by_image, excluded = _load_instances(instances_json)
    if not images_dir.is_dir():
        raise DatasetError(f"COCO images directory {images_dir} does not exist")
    written: list[Path] = []
    for image in images:
        if limit is not None and len(written) >= limit:
            break
        height, width = int(image["height"]), int(image["width"])
        annotations = by_image.get(image["id"], [])
        if min(height, width) < min_side or not annotations:
            continue
        if any(a["category_id"] in excluded for a in annotations):
            continue
        mask = np.zeros((height, width), bool)
        for annotation in annotations:
            try:
                mask |= segmentation_to_mask(annotation["segmentation"], height, width)
            except DatasetError as exc:
                raise DatasetError(f"{instances_json}: annotation {annotation.get('id')}: {exc}") from None
        if not mask.any():
            continue
        image_path = images_dir / image["file_name"]
        rgb = read_image_rgb(image_path)
        if rgb.shape[:2] != (height, width):
            raise DatasetError(f"{image_path} is {rgb.shape[0]}x{rgb.shape[1]}, the instances file says {height}x{width}")
        path = out_dir / f"{Path(image['file_name']).stem}.png"
        save_cutout(path, trim_cutout(Cutout(rgb, mask)))
        written.append(path)
    return written
