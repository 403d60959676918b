"""Open any model file a user names, `.onnx` or `.pt`, as the runtime's `Detector`.

Why a module of its own: every tool that takes `--model` (detect, evaluate, replay, bench, demo)
accepts an exported ONNX file, a shipped role name (`fast`, `accurate`, ...) or a training
checkpoint. The runtime opens the first two without torch; a checkpoint needs the torch reference
backend (deploy/torch_backend.py). This is the one door that picks between them, so the tools do
not each know which backend a suffix needs.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from flowclas_ros.deploy.torch_backend import TorchBackend
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import resolve_model_path

GPU_PROVIDERS = ("cuda", "tensorrt", "trt")


def open_detector(model_path: Optional[str | os.PathLike] = None,
                  providers: Sequence[str] = ("cpu",), **kwargs) -> Detector:
    """A Detector for an exported `.onnx` model (ONNX Runtime) or a `.pt` training checkpoint
    (torch eager; a GPU provider in `providers` puts it on CUDA). `kwargs`: the Detector's
    threshold / min_area / regions / zoom / depth_regions and, for ONNX Runtime, the backend options."""
    path = resolve_model_path(model_path)
    if path.suffix != ".pt":
        return Detector(path, providers, **kwargs)
    device = "cuda" if any(p.lower() in GPU_PROVIDERS for p in providers) else "cpu"
    detector_keys = {k: kwargs.pop(k) for k in ("threshold", "min_area", "regions", "zoom", "depth_regions")
                     if k in kwargs}
    return Detector(path, providers, backend=TorchBackend(path, device=device), **detector_keys)
