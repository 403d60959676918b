"""Dataset readers and writers for anomaly-segmentation image/label layouts.

Why this exists: training, evaluation and the toy/sim generators must agree
on one on-disk format and fail loudly (naming the file) on broken data rather
than silently training or scoring on garbage.

Generic layout::

    root/images/{id}.png|jpg|jpeg|webp   RGB (or grey / RGBA, normalised on read)
    root/labels/{id}.png                 uint8: 0 inlier, 1 anomaly, 255 void

Benchmark-specific layouts (SMIYC, Fishyscapes, Cityscapes, MVTec AD; see
:mod:`flowclas_ros.data.benchmarks`) register a reader in :data:`LAYOUTS`.
Their samples point at the dataset's OWN label files, in the dataset's own
value coding; each :class:`Sample` names that coding (``label_coding``) and
:data:`LABEL_DECODERS` maps a coding to a decoder that turns the raw file into
0 inlier / 1 anomaly / 255 void.

The one way to read the label of any sample::

    label = read_sample_label(sample, expected_shape=rgb.shape[:2])
    if label is None:   # an unlabelled frame (e.g. a benchmark's hidden test split)
        ...

``read_label(path)`` stays the reader of generic (0/1/255) label files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

__all__ = [
    "ANOMALY",
    "IMAGE_EXTENSIONS",
    "INLIER",
    "INLIER_CODING",
    "LABEL_DECODERS",
    "LABEL_VALUES",
    "LAYOUTS",
    "VOID",
    "DatasetError",
    "LabelDecoder",
    "Sample",
    "decode_file",
    "generic_layout",
    "load_layout",
    "read_image_rgb",
    "read_label",
    "read_sample_label",
    "value_map_decoder",
    "write_png",
    "write_sample",
]

INLIER = 0
ANOMALY = 1
VOID = 255
LABEL_VALUES: tuple[int, ...] = (INLIER, ANOMALY, VOID)
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")

PathLike = str | Path

#: Label coding of samples that are inlier everywhere by construction (e.g. MVTec ``good``
#: images): no label file, the label is all ``INLIER``.
INLIER_CODING = "inlier"


@dataclass(frozen=True)
class Sample:
    """One frame of a dataset.

    ``label_path`` is the dataset's own label file, None when there is none;
    ``label_coding`` names the value coding of that file (a key of :data:`LABEL_DECODERS`).
    A sample without a label file is unlabelled, unless its coding is
    :data:`INLIER_CODING` (known to be all inlier). Read labels with :func:`read_sample_label`.
    """

    id: str
    image_path: Path
    label_path: Path | None
    label_coding: str = "generic"

    def __post_init__(self) -> None:
        if self.label_coding != INLIER_CODING and self.label_coding not in LABEL_DECODERS:
            raise DatasetError(
                f"sample {self.id!r}: unknown label coding {self.label_coding!r}; "
                f"known codings: {', '.join(sorted([INLIER_CODING, *LABEL_DECODERS]))}"
            )
        if self.label_coding == INLIER_CODING and self.label_path is not None:
            raise DatasetError(f"sample {self.id!r}: coding {INLIER_CODING!r} has no label file, got {self.label_path}")

    @property
    def has_label(self) -> bool:
        """Whether :func:`read_sample_label` returns a label (rather than None)."""
        return self.label_path is not None or self.label_coding == INLIER_CODING


class DatasetError(ValueError):
    """Broken or missing dataset content; the message names the path and the problem."""


# ---------------------------------------------------------------- discovery


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DatasetError(f"{what} {path} {problem}")


def _index_images(images_dir: Path) -> dict[str, Path]:
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


def _dataset_images(images_dir: Path, what: str) -> dict[str, Path]:
    """{id: path} of the images in a dataset's image directory; a missing or empty one is an error."""
    _require_dir(images_dir, what)
    images = _index_images(images_dir)
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}")
    return images


def generic_layout(root: PathLike, require_labels: bool = False) -> list[Sample]:
    """List the samples of a generic-layout dataset, sorted by id."""
    root = Path(root)
    _require_dir(root, "dataset root")
    images = _dataset_images(root / "images", "images directory")
    labels_dir = root / "labels"
    samples = []
    for sample_id in sorted(images):
        label_path: Path | None = labels_dir / f"{sample_id}.png"
        if not label_path.is_file():
            if require_labels:
                raise DatasetError(f"image id {sample_id!r} has no label: expected {label_path}")
            label_path = None
        samples.append(Sample(sample_id, images[sample_id], label_path))
    return samples


LAYOUTS: dict[str, Callable[..., list[Sample]]] = {"generic": generic_layout}


def load_layout(name: str, root: PathLike, **kw: object) -> list[Sample]:
    """Read a dataset by layout name, so configs can pick the reader by string."""
    try:
        reader = LAYOUTS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}"
        ) from None
    return reader(root, **kw)


def parse_layout_option(item: str) -> tuple[str, str | int]:
    """'KEY=VALUE' of a `--layout-opt` flag -> (key, value), a decimal integer value as int
    (`stride=5`); a DatasetError naming the flag."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise DatasetError(f"--layout-opt {item!r} must look like KEY=VALUE")
    return key, int(value) if value.isdigit() else value


# ---------------------------------------------------------------- file I/O


def decode_file(path: PathLike, flags: int) -> np.ndarray:
    """cv2-decode a file (cv2 channel order); via numpy so odd path encodings work too."""
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    decoded = cv2.imdecode(buffer, flags) if buffer.size else None
    if decoded is None:
        raise DatasetError(f"cannot decode image file {path} (empty, truncated or not an image)")
    return decoded


_TO_CV2_ORDER = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}


def write_png(path: PathLike, array: np.ndarray) -> None:
    """Write an HxW, HxWx3 (RGB) or HxWx4 (RGBA) uint8 array as PNG, creating parent dirs."""
    path = Path(path)
    channels_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in _TO_CV2_ORDER)
    if array.dtype != np.uint8 or not channels_ok:
        raise ValueError(
            f"cannot write {path}: expected uint8 HxW, HxWx3 or HxWx4, got {array.dtype} {array.shape}"
        )
    if array.ndim == 3:
        array = cv2.cvtColor(array, _TO_CV2_ORDER[array.shape[2]])
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)


def read_image_rgb(path: PathLike) -> np.ndarray:
    """Read any supported image as HxWx3 uint8 RGB (grey replicated, alpha dropped).

    EXIF orientation is ignored on purpose: labels are stored in pixel order,
    and rotating only the image would misalign them.
    """
    bgr = decode_file(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_label_values(label: np.ndarray, source: object) -> None:
    bad = np.setdiff1d(np.unique(label), np.array(LABEL_VALUES, dtype=label.dtype))
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise DatasetError(f"label {source} has values outside {set(LABEL_VALUES)}: {shown}")


def _check_label_array(label: np.ndarray, source: object) -> None:
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"label {source} must be a single-channel uint8 image, got {label.dtype} with shape {label.shape}"
        )
    _check_label_values(label, source)


# ---------------------------------------------------------------- label codings

#: A decoder turns a raw label array (as ``cv2.IMREAD_UNCHANGED`` decodes the file) into an
#: HxW uint8 label of 0/1/255, raising :class:`DatasetError` (naming ``source``) on bad content.
LabelDecoder = Callable[[np.ndarray, object], np.ndarray]


def _decode_generic(raw: np.ndarray, source: object) -> np.ndarray:
    _check_label_array(raw, source)
    return raw


def value_map_decoder(coding: str, mapping: dict[int, int]) -> LabelDecoder:
    """A decoder for single-channel 8-bit labels whose raw values map value by value onto 0/1/255.

    Raw values missing from ``mapping`` are errors (naming the file and the values), so a
    label in an unexpected coding fails loudly instead of being scored as garbage.
    """
    if not mapping or not set(mapping) <= set(range(256)) or not set(mapping.values()) <= set(LABEL_VALUES):
        raise ValueError(f"coding {coding!r}: mapping must send 8-bit values to {LABEL_VALUES}, got {mapping}")
    lut = np.zeros(256, np.uint8)
    known = np.zeros(256, bool)
    for raw_value, value in mapping.items():
        lut[raw_value], known[raw_value] = value, True

    def decode(raw: np.ndarray, source: object) -> np.ndarray:
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise DatasetError(
                f"label {source} must be a single-channel uint8 image ({coding} coding), "
                f"got {raw.dtype} with shape {raw.shape}"
            )
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        bad = present[~known[present]]
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise DatasetError(f"label {source} has values that the {coding} coding does not define: {shown}")
        return lut[raw]

    decode.__name__ = decode.__qualname__ = f"decode_{coding}"
    decode.__doc__ = f"Decode {coding} labels: raw -> 0/1/255 by {mapping}."
    return decode


#: Label coding name -> decoder. Readers register their dataset's coding here (see benchmarks.py).
LABEL_DECODERS: dict[str, LabelDecoder] = {"generic": _decode_generic}


def read_label(
    path: PathLike, expected_shape: tuple[int, int] | None = None, coding: str = "generic"
) -> np.ndarray:
    """Read one label file as HxW uint8 0/1/255, rejecting values or shapes that would corrupt scores.

    ``coding`` names the file's value coding (default: the generic 0/1/255). To read the label of
    a :class:`Sample`, use :func:`read_sample_label`, which knows the sample's coding.
    """
    if coding == INLIER_CODING:
        raise DatasetError(f"coding {INLIER_CODING!r} has no label file ({path}); use read_sample_label")
    try:
        decoder = LABEL_DECODERS[coding]
    except KeyError:
        raise DatasetError(
            f"cannot read label {path}: unknown label coding {coding!r}; "
            f"known codings: {', '.join(sorted(LABEL_DECODERS))}"
        ) from None
    label = decoder(decode_file(path, cv2.IMREAD_UNCHANGED), path)
    if expected_shape is not None and label.shape != tuple(expected_shape):
        raise DatasetError(
            f"label {path} has shape {label.shape[0]}x{label.shape[1]}, "
            f"expected {expected_shape[0]}x{expected_shape[1]} (the image size)"
        )
    return label


def read_sample_label(sample: Sample, expected_shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """THE way to read any sample's label: HxW uint8 0 inlier / 1 anomaly / 255 void, or None.

    None means the sample is unlabelled (``not sample.has_label``). An :data:`INLIER_CODING`
    sample yields all zeros of ``expected_shape`` (or of its image's size when not given).
    """
    if sample.label_path is not None:
        return read_label(sample.label_path, expected_shape, sample.label_coding)
    if sample.label_coding != INLIER_CODING:
        return None
    shape = tuple(expected_shape) if expected_shape is not None else read_image_rgb(sample.image_path).shape[:2]
    return np.zeros(shape, np.uint8)


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
        _check_label_array(label, f"for {sample_id!r}")
        if label.shape != image_rgb.shape[:2]:
            raise DatasetError(f"label for {sample_id!r} has shape {label.shape}, image has {image_rgb.shape[:2]}")
    write_png(root / "images" / f"{sample_id}.png", image_rgb)
    if label is not None:
        write_png(root / "labels" / f"{sample_id}.png", label)


# Benchmark readers and their label codings register themselves into LAYOUTS / LABEL_DECODERS;
# imported last so that importing this module always gives the complete registry.
from . import benchmarks as _benchmarks  # noqa: E402,F401  (import for its registrations)
from . import bags as _bags  # noqa: E402,F401  (the rosbag2 layout)
