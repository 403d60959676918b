"""The torch reference backend: a training checkpoint run eagerly, behind the runtime's Detector.

Why it is here and not in runtime/: the runtime never imports torch (a robot runs exported ONNX
files); parity checks, the speed benchmark and `flowclas-ros detect --model run.pt` want the
checkpoint itself, through the same pre- and post-processing, so they plug this backend into a
`Detector`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import resolve_model_path

GPU_PROVIDERS = ("cuda", "tensorrt", "trt")


class TorchBackend:
    """A training checkpoint run by torch eager (the reference the ONNX export is checked against)."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu") -> None:
        import torch  # lazily: open_detector serves ONNX models on installs without torch

        from flowclas_ros.deploy.export import load_model_for_export

        self.torch = torch
        self.device = torch.device(device)
        self.model, self.info = load_model_for_export(checkpoint)
        self.model.to(self.device).eval()
        self.providers = [f"torch:{self.device}"]
        self.path = Path(checkpoint)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(batch).to(self.device))
        return out[:, 0].float().cpu().numpy()


def open_detector(model_path: Optional[str | os.PathLike] = None,
                  providers: Sequence[str] = ("cpu",), **kwargs) -> Detector:
    """A Detector for an exported `.onnx` model (ONNX Runtime) or a `.pt` training checkpoint
    (torch eager; a GPU provider in `providers` puts it on CUDA). `kwargs`: the Detector's
    threshold / min_area / regions and, for ONNX Runtime, the backend options."""
    path = resolve_model_path(model_path)
    if path.suffix != ".pt":
        return Detector(path, providers, **kwargs)
    device = "cuda" if any(p.lower() in GPU_PROVIDERS for p in providers) else "cpu"
    detector_keys = {k: kwargs.pop(k) for k in ("threshold", "min_area", "regions")
                     if k in kwargs}
    return Detector(path, providers, backend=TorchBackend(path, device=device), **detector_keys)
