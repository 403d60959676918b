"""Readers for the public benchmark layouts (listed in ``layouts.LAYOUTS``; codings in ``labels.LABEL_DECODERS``).

Why this exists: evaluating on SMIYC / Fishyscapes and training on Cityscapes / MVTec must read the
datasets exactly as their authors ship them (file naming AND label value coding), without a
conversion step that could drift. Each reader returns :class:`Sample` objects that point at the
dataset's own label files and name their coding; ``read_sample_label`` decodes any of them to
0 inlier / 1 anomaly / 255 void.

Layouts (files under ``root``) and the label coding their samples carry:

- ``smiyc_anomaly``: ``dataset_AnomalyTrack/images/{id}.jpg|png|webp`` with
  ``dataset_AnomalyTrack/labels_masks/{id}_labels_semantic.png``; coding ``smiyc`` (0/1/255 as is).
- ``smiyc_obstacle``: ``dataset_ObstacleTrack/images/{id}.webp|jpg|png``, same mask naming and coding.
- ``fishyscapes_laf``: ``dataset_FishyLAF/labels/val/{id}_fishy-labels.png`` (0/1/255 as is), the
  image ``leftImg8bit/{split}/{scene}/{id}_leftImg8bit.png`` found across LostAndFound's scenes.
- ``fishyscapes_static``: ``original/{id}.png`` with ``labels/{id}.png``; raw 0 in / 1 out / 2 void.
- ``cityscapes``: ``leftImg8bit/{split}/{city}/{id}_leftImg8bit.png`` with
  ``gtFine/{split}/{city}/{id}_gtFine_labelTrainIds.png``; trainIds 0-18 -> 0, 255 -> 255.
- ``mvtec``: ``{category}/train/good/*.png`` and ``{category}/test/{defect}/*.png`` with
  ``{category}/ground_truth/{defect}/{stem}_mask.png`` (0 -> 0, 255 -> 1); ``good``: all 0, no file.

Test-split frames without a label file are returned with ``label_path=None`` (unlabelled) unless
``require_labels=True``; a label file without its image is always an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from flowclas_ros.data.files import IMAGE_EXTENSIONS, DatasetError, PathLike
from flowclas_ros.data.generic import dataset_images, index_images, require_dir
from flowclas_ros.data.labels import INLIER_CODING, Sample

__all__ = [
    "cityscapes_layout",
    "fishyscapes_laf_layout",
    "fishyscapes_static_layout",
    "mvtec_categories",
    "mvtec_layout",
    "smiyc_anomaly_layout",
    "smiyc_obstacle_layout",
]


# ---------------------------------------------------------------- helpers


def _files_with_suffix(directory: Path, suffix: str) -> dict[str, Path]:
    """Map id -> file for the files named ``{id}{suffix}`` directly in ``directory``."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.endswith(suffix) and len(path.name) > len(suffix) and path.is_file():
            if not path.name.startswith("."):
                found[path.name[: -len(suffix)]] = path
    return found


def _image_files_with_suffix(directories: Iterable[Path], suffix: str) -> dict[str, list[Path]]:
    """Map id -> every image file ``{id}{suffix}{.png|.jpg|...}`` in ``directories`` (duplicates kept)."""
    found: dict[str, list[Path]] = {}
    for directory in directories:
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
                found.setdefault(path.stem[: -len(suffix)], []).append(path)
    return found


def _unique(sample_id: str, paths: list[Path]) -> Path:
    if len(paths) > 1:
        raise DatasetError(f"image id {sample_id!r} has several files: {', '.join(str(p) for p in paths)}")
    return paths[0]


def _subdirs(directory: Path) -> list[Path]:
    return [d for d in sorted(directory.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def _pair(
    images: dict[str, Path],
    labels: dict[str, Path],
    coding: str,
    require_labels: bool,
    expected_label: str,
) -> list[Sample]:
    """Samples sorted by id; a label without an image, or a missing required label, is an error."""
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DatasetError(
            f"label {labels[orphans[0]]} has no image (id {orphans[0]!r}"
            + (f", and {len(orphans) - 1} more labels without images)" if len(orphans) > 1 else ")")
        )
    samples = []
    for sample_id in sorted(images):
        label_path = labels.get(sample_id)
        if label_path is None and require_labels:
            raise DatasetError(f"image id {sample_id!r} has no label: expected {expected_label.format(id=sample_id)}")
        samples.append(Sample(sample_id, images[sample_id], label_path, coding))
    return samples


# ---------------------------------------------------------------- Segment Me If You Can


def _smiyc(track: str, root: PathLike, require_labels: bool) -> list[Sample]:
    root = Path(root)
    require_dir(root, "dataset root")
    track_dir = root / track
    if not track_dir.is_dir() and root.name == track:
        track_dir = root  # root given as the track directory itself
    images = dataset_images(track_dir / "images", f"{track} images directory")
    labels_dir = track_dir / "labels_masks"
    suffix = "_labels_semantic.png"
    labels = _files_with_suffix(labels_dir, suffix) if labels_dir.is_dir() else {}
    return _pair(images, labels, "smiyc", require_labels, str(labels_dir / ("{id}" + suffix)))


def smiyc_anomaly_layout(root: PathLike, require_labels: bool = False) -> list[Sample]:
    """RoadAnomaly21: ``root/dataset_AnomalyTrack/{images,labels_masks}`` (labels 0/1/255)."""
    return _smiyc("dataset_AnomalyTrack", root, require_labels)


def smiyc_obstacle_layout(root: PathLike, require_labels: bool = False) -> list[Sample]:
    """RoadObstacle21: ``root/dataset_ObstacleTrack/{images,labels_masks}`` (labels 0/1/255)."""
    return _smiyc("dataset_ObstacleTrack", root, require_labels)


# ---------------------------------------------------------------- Fishyscapes


def fishyscapes_laf_layout(
    root: PathLike,
    split: str | None = None,
    laf_root: PathLike | None = None,
    require_labels: bool = True,
) -> list[Sample]:
    """Fishyscapes Lost & Found: one sample per ``dataset_FishyLAF/labels/val/{id}_fishy-labels.png``.

    The image ``{id}_leftImg8bit.png`` is looked up across the scenes of LostAndFound's
    ``leftImg8bit/{split}`` (every split when ``split`` is None) under ``laf_root`` (default ``root``).
    Every sample is labelled; ``require_labels`` is accepted for a uniform reader signature.
    """
    root = Path(root)
    require_dir(root, "dataset root")
    labels_dir = root / "dataset_FishyLAF" / "labels" / "val"
    require_dir(labels_dir, "FishyLAF labels directory")
    labels = _files_with_suffix(labels_dir, "_fishy-labels.png")
    if not labels:
        raise DatasetError(f"no *_fishy-labels.png labels in {labels_dir}")
    images_root = Path(laf_root if laf_root is not None else root) / "leftImg8bit"
    require_dir(images_root, "LostAndFound leftImg8bit directory")
    if split is not None:
        require_dir(images_root / split, "LostAndFound split directory")
    split_dirs = [images_root / split] if split is not None else _subdirs(images_root)
    scene_dirs = [scene for split_dir in split_dirs for scene in _subdirs(split_dir)]
    found = _image_files_with_suffix(scene_dirs, "_leftImg8bit")
    images = {}
    for sample_id, label_path in labels.items():
        if sample_id not in found:
            where = images_root / (split or "*") / "*" / f"{sample_id}_leftImg8bit.png"
            raise DatasetError(f"FishyLAF label {label_path} (id {sample_id!r}) has no image: expected {where}")
        images[sample_id] = _unique(sample_id, found[sample_id])
    return _pair(images, labels, "fishyscapes_laf", require_labels, "")


def fishyscapes_static_layout(root: PathLike, require_labels: bool = False) -> list[Sample]:
    """Fishyscapes Static: ``root/original/{id}.png`` and ``root/labels/{id}.png`` (0 in / 1 out / 2 void)."""
    root = Path(root)
    require_dir(root, "dataset root")
    images = dataset_images(root / "original", "Fishyscapes Static images directory")
    labels_dir = root / "labels"
    labels = _files_with_suffix(labels_dir, ".png") if labels_dir.is_dir() else {}
    return _pair(images, labels, "fishyscapes_static", require_labels, str(labels_dir / "{id}.png"))


# ---------------------------------------------------------------- Cityscapes


def cityscapes_layout(root: PathLike, split: str = "train", require_labels: bool = False) -> list[Sample]:
    """Cityscapes ``split`` as an inlier source: every pixel is inlier except trainId 255 (void).

    Ids are the frame names (``aachen_000000_000019``). Labels are the ``labelTrainIds`` files made
    by cityscapesScripts' ``createTrainIdLabelImgs``; finding only ``labelIds`` is an error.
    """
    root = Path(root)
    require_dir(root, "dataset root")
    images_dir = root / "leftImg8bit" / split
    require_dir(images_dir, f"Cityscapes {split!r} images directory")
    found = _image_files_with_suffix(_subdirs(images_dir), "_leftImg8bit")
    if not found:
        raise DatasetError(f"no {{city}}/*_leftImg8bit.png images in {images_dir}")
    images = {sample_id: _unique(sample_id, paths) for sample_id, paths in found.items()}
    labels: dict[str, Path] = {}
    for sample_id, image_path in images.items():
        gt_dir = root / "gtFine" / split / image_path.parent.name
        label_path = gt_dir / f"{sample_id}_gtFine_labelTrainIds.png"
        if label_path.is_file():
            labels[sample_id] = label_path
        elif (gt_dir / f"{sample_id}_gtFine_labelIds.png").is_file():
            raise DatasetError(
                f"{label_path} is missing but {sample_id}_gtFine_labelIds.png exists: generate the trainId "
                "labels with cityscapesScripts' preparation/createTrainIdLabelImgs.py"
            )
    expected = str(root / "gtFine" / split / "{{city}}" / "{id}_gtFine_labelTrainIds.png")
    return _pair(images, labels, "cityscapes_trainids", require_labels, expected)


# ---------------------------------------------------------------- MVTec AD


def mvtec_categories(root: PathLike) -> list[str]:
    """The MVTec AD categories under ``root``: directories holding ``train`` or ``test``."""
    root = Path(root)
    require_dir(root, "dataset root")
    return [d.name for d in _subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()]


def mvtec_layout(
    root: PathLike, category: str | None = None, split: str = "train", require_labels: bool = False
) -> list[Sample]:
    """MVTec AD ``category``/``split`` ("train" or "test"); ids are ``{defect}_{stem}`` (e.g. ``good_000``).

    ``good`` images are inlier everywhere (coding ``inlier``, no label file); a defect image's
    mask ``ground_truth/{defect}/{stem}_mask.png`` (255 = defect) must exist. Every sample is
    labelled; ``require_labels`` is accepted for a uniform reader signature.
    """
    root = Path(root)
    categories = mvtec_categories(root)
    if category is None or category not in categories:
        problem = "needs a category=" if category is None else f"has no category {category!r}"
        raise DatasetError(
            f"MVTec AD layout {problem}; categories found in {root}: {', '.join(categories) or 'none'}"
        )
    if split not in ("train", "test"):
        raise DatasetError(f"MVTec AD split must be 'train' or 'test', got {split!r}")
    split_dir = root / category / split
    require_dir(split_dir, f"MVTec AD {category} {split} directory")
    samples: list[Sample] = []
    ids: set[str] = set()
    for defect_dir in _subdirs(split_dir):
        defect = defect_dir.name
        for stem, image_path in index_images(defect_dir).items():
            sample_id = f"{defect}_{stem}"
            if sample_id in ids:
                raise DatasetError(f"MVTec AD id {sample_id!r} is ambiguous in {split_dir}")
            ids.add(sample_id)
            if defect == "good":
                samples.append(Sample(sample_id, image_path, None, INLIER_CODING))
                continue
            mask = root / category / "ground_truth" / defect / f"{stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(f"MVTec AD defect image {image_path} has no mask: expected {mask}")
            samples.append(Sample(sample_id, image_path, mask, "mvtec_mask"))
    if not samples:
        raise DatasetError(f"no images in {split_dir}/{{defect}}/ (expected e.g. {split_dir / 'good' / '000.png'})")
    return sorted(samples, key=lambda s: s.id)

