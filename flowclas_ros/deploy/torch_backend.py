"""The torch reference backend: a training checkpoint run eagerly, behind the runtime's Detector.

Why it is here and not in runtime/: the runtime never imports torch (a robot runs exported ONNX
files); parity checks, the speed benchmark and `flowclas-ros detect --model run.pt` want the
checkpoint itself, through the same pre- and post-processing, so they plug this backend into a
`Detector` (deploy/open_model.py picks it for a `.pt` file).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class TorchBackend:
    """A training checkpoint run by torch eager (the reference the ONNX export is checked against)."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu") -> None:
        import torch  # lazily: open_model serves ONNX models on installs without torch

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
