"""The one writer of a model file's metadata: `ModelInfo` -> the ONNX `metadata_props`.

Export and quantisation both produce model files; the runtime reads them back with
`ModelInfo.from_metadata`, so the two directions live beside one dataclass.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.runtime.depth_regions import DEPTH_REGIONS_KEY, DepthRegions
from flowclas_ros.runtime.model_info import ModelInfo, read_model_info
from flowclas_ros.runtime.regions import REGION_KEY, RegionEvidence
from flowclas_ros.runtime.zoom_band import ZOOM_KEY, ZoomBand


def set_metadata(proto: Any, info: ModelInfo) -> None:
    """Replace the metadata_props of an onnx.ModelProto with `info`'s."""
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def set_region_evidence(model: str | os.PathLike, out: str | os.PathLike,
                        regions: Optional[RegionEvidence]) -> ModelInfo:
    """Copy an exported model to ``out`` with the region-evidence stage it carries set to
    ``regions`` (None: removed). The graph and every other field are kept byte for byte; the
    stage is post-processing after the graph (runtime/regions.py), so no retraining is needed.
    Returns the new file's `ModelInfo`."""
    info = read_model_info(model)
    extra = {k: v for k, v in info.extra.items() if k != REGION_KEY}
    if regions is not None:
        extra[REGION_KEY] = regions.to_json()
    return _rewrite(model, out, dataclasses.replace(info, extra=extra))


def set_depth_regions(model: str | os.PathLike, out: str | os.PathLike,
                      stage: Optional[DepthRegions]) -> ModelInfo:
    """Copy an exported model to ``out`` with the depth region stage (runtime/depth_regions.py) set
    to ``stage`` (None: removed); the graph and every other field are kept byte for byte."""
    info = read_model_info(model)
    extra = {k: v for k, v in info.extra.items() if k != DEPTH_REGIONS_KEY}
    if stage is not None:
        extra[DEPTH_REGIONS_KEY] = stage.to_json()
    return _rewrite(model, out, dataclasses.replace(info, extra=extra))


def set_zoom_band(model: str | os.PathLike, out: str | os.PathLike, band: Optional[ZoomBand],
                  threshold: float, threshold_rule: str) -> ModelInfo:
    """Copy an exported model to ``out`` with the zoomed-band stage (runtime/zoom_band.py) set to
    ``band`` (None: removed) and the threshold that goes with it; the graph is kept byte for byte."""
    info = read_model_info(model)
    extra = {k: v for k, v in info.extra.items() if k != ZOOM_KEY}
    if band is not None:
        extra[ZOOM_KEY] = band.to_json()
    return _rewrite(model, out, dataclasses.replace(info, extra=extra, threshold=float(threshold),
                                                    threshold_rule=threshold_rule))


def _rewrite(model: str | os.PathLike, out: str | os.PathLike, info: ModelInfo) -> ModelInfo:
    """``model``'s graph saved to ``out`` with ``info`` as its metadata; the new file's info."""
    import onnx

    proto = onnx.load(str(model))
    set_metadata(proto, info)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return read_model_info(out)
