"""The one writer of a model file's metadata: `ModelInfo` -> the ONNX `metadata_props`.

Export and quantisation both produce model files; the runtime reads them back with
`ModelInfo.from_metadata`, so the two directions live beside one dataclass.
"""
from __future__ import annotations

from typing import Any

from flowclas_ros.runtime.model_info import ModelInfo


def set_metadata(proto: Any, info: ModelInfo) -> None:
    """Replace the metadata_props of an onnx.ModelProto with `info`'s."""
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
