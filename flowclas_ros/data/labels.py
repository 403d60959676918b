"""Label files and their codings: every dataset's own label values -> 0 inlier / 1 anomaly / 255 void.

Why one module: a layout's samples point at the dataset's OWN label files, in the dataset's own
value coding (Cityscapes train ids, Fishyscapes' 0/1/2, MVTec masks, ...). Training, calibration,
evaluation and quantisation must all decode them the same way, so each :class:`Sample` names its
coding and :data:`LABEL_DECODERS` (every coding the package knows, here) turns the raw file into
the package's coding (:mod:`flowclas_ros.runtime.labels`).

The one way to read the label of any sample::

    label = read_sample_label(sample, expected_shape=rgb.shape[:2])
    if label is None:   # an unlabelled frame (e.g. a benchmark's hidden test split)
        ...

Training and calibration, which treat an unlabelled frame as all inlier (robot logs without
obstacles), call :func:`read_label_or_inlier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from flowclas_ros.data.files import DatasetError, PathLike, decode_file, read_image_rgb
from flowclas_ros.runtime.labels import ANOMALY, INLIER, LABEL_VALUES, VOID

#: Label coding of samples that are inlier everywhere by construction (e.g. MVTec ``good``
#: images): no label file, the label is all ``INLIER``.
INLIER_CODING = "inlier"


def check_label_values(label: np.ndarray, source: object) -> None:
    bad = np.setdiff1d(np.unique(label), np.array(LABEL_VALUES, dtype=label.dtype))
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise DatasetError(f"label {source} has values outside {set(LABEL_VALUES)}: {shown}")


def check_label_array(label: np.ndarray, source: object) -> None:
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"label {source} must be a single-channel uint8 image, got {label.dtype} with shape {label.shape}"
        )
    check_label_values(label, source)


# ---------------------------------------------------------------- label codings

#: A decoder turns a raw label array (as ``cv2.IMREAD_UNCHANGED`` decodes the file) into an
#: HxW uint8 label of 0/1/255, raising :class:`DatasetError` (naming ``source``) on bad content.
LabelDecoder = Callable[[np.ndarray, object], np.ndarray]


def _decode_generic(raw: np.ndarray, source: object) -> np.ndarray:
    check_label_array(raw, source)
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


_BINARY_VOID = {0: INLIER, 1: ANOMALY, 255: VOID}
_MASK_0_255 = {0: INLIER, 255: ANOMALY}  # the common binary-mask convention (no void)

#: Label coding name -> decoder: every coding a layout of this package uses.
LABEL_DECODERS: dict[str, LabelDecoder] = {
    "generic": _decode_generic,
    "smiyc": value_map_decoder("smiyc", _BINARY_VOID),
    "fishyscapes_laf": value_map_decoder("fishyscapes_laf", _BINARY_VOID),
    "fishyscapes_static": value_map_decoder("fishyscapes_static", {0: INLIER, 1: ANOMALY, 2: VOID}),
    # Anomaly-wise every Cityscapes class is an inlier; only unlabelled pixels (255) are void.
    "cityscapes_trainids": value_map_decoder("cityscapes_trainids", {**{t: INLIER for t in range(19)}, 255: VOID}),
    "mvtec_mask": value_map_decoder("mvtec_mask", _MASK_0_255),
    # Any dataset's 0/255 masks (generic layout option `coding=mask_0_255`): read as the generic
    # 0/1/255 coding, every anomaly pixel would be void.
    "mask_0_255": value_map_decoder("mask_0_255", _MASK_0_255),
}


@dataclass(frozen=True)
class Sample:
    """One frame of a dataset.

    ``label_path`` is the dataset's own label file, None when there is none;
    ``label_coding`` names the value coding of that file (a key of :data:`LABEL_DECODERS`).
    A sample without a label file is unlabelled, unless its coding is
    :data:`INLIER_CODING` (known to be all inlier). Read labels with :func:`read_sample_label`.
    ``depth_path``: the frame's aligned depth when the dataset has it (``depth/{id}.png``).
    """

    id: str
    image_path: Path
    label_path: Path | None
    label_coding: str = "generic"
    depth_path: Path | None = None  # an aligned 16-bit depth PNG in millimetres (data/depth_files.py)

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




def read_label_or_inlier(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """The sample's label in its own coding, or all inlier when it is unlabelled: what training
    and calibration learn from (frames of robot logs carry no labels and show no obstacles)."""
    label = read_sample_label(sample, expected_shape=shape)
    return np.zeros(shape, np.uint8) if label is None else label
