"""`Detector`: the object every door (node, replay, evaluator, demo) runs frames through."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from flowclas_ros.runtime.backends import Backend, open_backend
from flowclas_ros.runtime.images import to_rgb8
from flowclas_ros.runtime.model_info import ModelInfo, resolve_model_path
from flowclas_ros.runtime.processing import (
    Geometry,
    Obstacle,
    heatmap_to_source,
    preprocess,
    threshold_components,
)


@dataclass
class Detection:
    """Result for one frame, at the frame's own resolution."""

    heatmap: np.ndarray  # HxW float32 anomaly score (model units; threshold ~ calibrated)
    mask: np.ndarray  # HxW uint8, 255 = obstacle (after the min-area filter)
    obstacles: list[Obstacle]
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector:
    """Loads a model once; `detect(image, encoding)` -> heatmap, mask, obstacle components.

    Accepts HxWx3 uint8 (rgb8/bgr8), HxWx4 (rgba8/bgra8), mono8, 16-bit mono and 32FC1 arrays (see
    `images.to_rgb8` for the conversion policy). `threshold=None` uses the model's calibrated
    threshold. `providers` is a preference list (tensorrt, cuda, cpu); unavailable ones are skipped
    with a logged warning and CPU is the fallback. `backend`: another backend than ONNX Runtime
    on `model_path` (the torch reference of `flowclas_ros.deploy.torch_backend`).
    """

    def __init__(self, model_path: Optional[str | os.PathLike] = None,
                 providers: Sequence[str] = ("cpu",), threshold: Optional[float] = None,
                 min_area: int = 0, backend: Optional[Backend] = None, **backend_kwargs) -> None:
        self.model_path = resolve_model_path(model_path)
        self.backend = backend or open_backend(self.model_path, providers, **backend_kwargs)
        self.info: ModelInfo = self.backend.info
        self.threshold = float(self.info.threshold if threshold is None else threshold)
        self.min_area = int(min_area)

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    def prepare(self, image: np.ndarray, encoding: str = "rgb8") -> tuple[np.ndarray, Geometry]:
        rgb = to_rgb8(image, encoding)
        i = self.info
        return preprocess(rgb, i.input_size, i.mean, i.std, i.resize_policy)

    def heatmap(self, image: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
        x, geom = self.prepare(image, encoding)
        return heatmap_to_source(self.backend(x[None])[0], geom)

    def detect(self, image: np.ndarray, encoding: str = "rgb8") -> Detection:
        t0 = time.perf_counter()
        x, geom = self.prepare(image, encoding)
        t1 = time.perf_counter()
        score = self.backend(x[None])[0]
        t2 = time.perf_counter()
        heat = heatmap_to_source(score, geom)
        mask, obstacles = threshold_components(heat, self.threshold, self.min_area)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                   "postprocess": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return Detection(heat, mask, obstacles, timings)
