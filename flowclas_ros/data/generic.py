"""The generic dataset layout: the package's own on-disk format, read and written.

::

    root/images/{id}.png|jpg|jpeg|webp   RGB (or grey / RGBA, normalised on read)
    root/labels/{id}.png                 uint8: 0 inlier, 1 anomaly, 255 void

The toy and simulator generators write it, rosbag2 frames are extracted to it, and every other
layout reader (:mod:`flowclas_ros.data.benchmarks`) reuses its directory helpers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowclas_ros.data.depth_files import depth_path
from flowclas_ros.data.files import IMAGE_EXTENSIONS, DatasetError, PathLike, write_png
from flowclas_ros.data.labels import Sample, check_label_array


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DatasetError(f"{what} {path} {problem}")


def index_images(images_dir: Path) -> dict[str, Path]:
    """Map id -> image file; two files with one id would make labels ambiguous."""
    found: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not path.is_file():
            continue
        if path.stem in found:
            raise DatasetError(
                f"{images_dir}: image id {path.stem!r} has several files "
                f"({found[path.stem].name}, {path.name})"
            )
        found[path.stem] = path
    return found


def ignored_image_entries(images_dir: Path) -> list[str]:
    """Names of the entries :func:`index_images` skips although they are not hidden: files
    without an image extension and anything that is not a regular file (e.g. a directory named
    ``x.png``), sorted; [] when the directory does not exist."""
    if not images_dir.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in images_dir.iterdir()
                  if not p.name.startswith(".")
                  and (p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file()))


def dataset_images(images_dir: Path, what: str) -> dict[str, Path]:
    """{id: path} of the images in a dataset's image directory; a missing or empty one is an error."""
    require_dir(images_dir, what)
    images = index_images(images_dir)
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}")
    return images


def generic_layout(root: PathLike, require_labels: bool = False, coding: str = "generic") -> list[Sample]:
    """List the samples of a generic-layout dataset, sorted by id. ``coding``: the value coding of
    the label files, a key of :data:`~flowclas_ros.data.labels.LABEL_DECODERS` (default generic
    0/1/255; ``mask_0_255`` for binary masks, `--layout-opt coding=mask_0_255`). A frame with
    ``depth/{id}.png`` carries it as ``depth_path`` (its intrinsics: ``camera_info.yaml``)."""
    root = Path(root)
    require_dir(root, "dataset root")
    images = dataset_images(root / "images", "images directory")
    labels_dir = root / "labels"
    samples = []
    for sample_id in sorted(images):
        label_path: Path | None = labels_dir / f"{sample_id}.png"
        if not label_path.is_file():
            if require_labels:
                raise DatasetError(f"image id {sample_id!r} has no label: expected {label_path}")
            label_path = None
        depth: Path | None = depth_path(root, sample_id)
        samples.append(Sample(sample_id, images[sample_id], label_path, coding,
                              depth if depth.is_file() else None))
    return samples


def _check_sample_id(sample_id: str) -> None:
    if not sample_id or sample_id.startswith(".") or any(c in sample_id for c in "/\\\0"):
        raise DatasetError(f"invalid sample id {sample_id!r}: must be a plain, non-hidden file stem")


def write_sample(root: PathLike, sample_id: str, image_rgb: np.ndarray, label: np.ndarray | None) -> None:
    """Write one frame in the generic layout (PNG), validating it as a reader would."""
    _check_sample_id(sample_id)
    root = Path(root)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise DatasetError(f"image for {sample_id!r} must be HxWx3 uint8, got {image_rgb.dtype} {image_rgb.shape}")
    if label is not None:
        check_label_array(label, f"for {sample_id!r}")
        if label.shape != image_rgb.shape[:2]:
            raise DatasetError(f"label for {sample_id!r} has shape {label.shape}, image has {image_rgb.shape[:2]}")
    write_png(root / "images" / f"{sample_id}.png", image_rgb)
    if label is not None:
        write_png(root / "labels" / f"{sample_id}.png", label)
