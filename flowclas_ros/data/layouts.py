"""The registry of dataset layouts: a config or a CLI flag names a reader by string.

Adding a layout: write a reader ``(root, **options) -> list[Sample]`` whose samples name their
label coding (add the coding to :data:`flowclas_ros.data.labels.LABEL_DECODERS`), and list it in
:data:`LAYOUTS` below.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, TypeVar

import numpy as np

from flowclas_ros.data import benchmarks
from flowclas_ros.data.files import DatasetError, PathLike
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import Sample
from flowclas_ros.data.rosbag_layout import rosbag2_layout


class LayoutSource(Protocol):
    """What a data source needs to be read: the fields of a config's `data.train[i]` / `data.val`
    (flowclas_ros.config.DataSource). Named here as a protocol, not imported, because configs sit
    above the data readers: the readers take any object with these attributes."""

    root: str
    layout: str
    topic: Optional[str]
    stride: int


LAYOUTS: dict[str, Callable[..., list[Sample]]] = {
    "generic": generic_layout,
    "smiyc_anomaly": benchmarks.smiyc_anomaly_layout,
    "smiyc_obstacle": benchmarks.smiyc_obstacle_layout,
    "fishyscapes_laf": benchmarks.fishyscapes_laf_layout,
    "fishyscapes_static": benchmarks.fishyscapes_static_layout,
    "cityscapes": benchmarks.cityscapes_layout,
    "mvtec": benchmarks.mvtec_layout,
    "rosbag2": rosbag2_layout,
}


def load_layout(name: str, root: PathLike, **kw: object) -> list[Sample]:
    """Read a dataset by layout name, so configs can pick the reader by string."""
    try:
        reader = LAYOUTS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}"
        ) from None
    try:
        return reader(root, **kw)
    except TypeError as exc:  # an option the reader does not take
        if not kw:
            raise
        raise DatasetError(f"layout {name!r}: bad layout option ({exc})") from exc


def source_samples(src: LayoutSource) -> list[Sample]:
    """The samples of one configured data source; layout options (topic, stride) are passed only
    when set, so layouts without options keep working."""
    return load_layout(src.layout, src.root, **source_options(src))


def source_options(src: LayoutSource) -> dict[str, str | int]:
    """The layout options a data source sets (its `topic`, a `stride` other than 1)."""
    opts: dict[str, str | int] = {}
    if src.topic is not None:
        opts["topic"] = src.topic
    if src.stride != 1:
        opts["stride"] = src.stride
    return opts


T = TypeVar("T")


def evenly_spaced(items: Sequence[T], n: int) -> list[T]:
    """At most `n` items spread evenly from the first to the last: the frames calibration,
    quantisation and the export parity check use, so the same source gives the same frames."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def parse_layout_option(item: str) -> tuple[str, str | int]:
    """'KEY=VALUE' of a `--layout-opt` flag -> (key, value), a decimal integer value as int
    (`stride=5`); a DatasetError naming the flag."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise DatasetError(f"--layout-opt {item!r} must look like KEY=VALUE")
    return key, int(value) if value.isdigit() else value


