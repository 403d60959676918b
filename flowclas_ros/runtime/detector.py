"""`Detector`: the object every door (node, replay, evaluator, demo) runs frames through."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from flowclas_ros.runtime.backends import Backend, open_backend
from flowclas_ros.runtime.depth_regions import (
    DepthRegions,
    DepthRegionsError,
    depth_regions_of,
    lift_depth_regions,
)
from flowclas_ros.runtime.images import to_rgb8
from flowclas_ros.runtime.model_info import ModelFileError, ModelInfo, resolve_model_path
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics
from flowclas_ros.runtime.processing import (
    Geometry,
    Obstacle,
    content_box,
    heatmap_to_source,
    preprocess_with_image,
    threshold_components,
)
from flowclas_ros.runtime.regions import (
    RegionEvidence,
    RegionEvidenceError,
    lift_regions,
    region_evidence_of,
)
from flowclas_ros.runtime.zoom_band import ZoomBand, ZoomBandError, band_heatmap, join_band, zoom_band_of

# `regions=` / `zoom=` of a Detector: the stage the model file carries, or none at all
FROM_MODEL, NO_REGIONS = "model", "off"


@dataclass
class Detection:
    """Result for one frame, at the frame's own resolution."""

    heatmap: np.ndarray  # HxW float32 anomaly score (model units; threshold ~ calibrated)
    mask: np.ndarray  # HxW uint8, 255 = obstacle (after the min-area filter)
    obstacles: list[Obstacle]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # what the depth region stage did: "off" (the model carries none), "no_depth" (the frame came
    # without depth), or runtime/depth_regions.py's reason ("lifted", "no_segment", "no_ground")
    depth_stage: str = "off"


class Detector:
    """Loads a model once; `detect(image, encoding)` -> heatmap, mask, obstacle components.

    Accepts HxWx3 uint8 (rgb8/bgr8), HxWx4 (rgba8/bgra8), mono8, 16-bit mono and 32FC1 arrays (see
    `images.to_rgb8` for the conversion policy). `threshold=None` uses the model's calibrated
    threshold. `providers` is a preference list (tensorrt, cuda, cpu); unavailable ones are skipped
    with a logged warning and CPU is the fallback. `backend`: another backend than ONNX Runtime
    on `model_path` (the torch reference of `flowclas_ros.deploy.torch_backend`). `regions`: the
    region-evidence stage after the model (runtime/regions.py): "model" (default) runs the one
    the model file carries, if any; "off" none; a `RegionEvidence` that one. `zoom`: the zoomed
    band (runtime/zoom_band.py), the same choices. `depth_regions`: the depth region stage
    (runtime/depth_regions.py), the same choices; it runs on frames given with their aligned depth
    (metres, NaN = no reading) and the colour camera's intrinsics.
    """

    def __init__(self, model_path: Optional[str | os.PathLike] = None,
                 providers: Sequence[str] = ("cpu",), threshold: Optional[float] = None,
                 min_area: int = 0, backend: Optional[Backend] = None,
                 regions: str | RegionEvidence = FROM_MODEL, zoom: str | ZoomBand = FROM_MODEL,
                 depth_regions: str | DepthRegions = FROM_MODEL, **backend_kwargs) -> None:
        self.model_path = resolve_model_path(model_path)
        self.backend = backend or open_backend(self.model_path, providers, **backend_kwargs)
        self.info: ModelInfo = self.backend.info
        self.threshold = float(self.info.threshold if threshold is None else threshold)
        self.min_area = int(min_area)
        self.regions: Optional[RegionEvidence] = self._stage(
            "regions", regions, RegionEvidence, region_evidence_of, RegionEvidenceError)
        self.zoom: Optional[ZoomBand] = self._stage("zoom", zoom, ZoomBand, zoom_band_of, ZoomBandError)
        self.depth_regions: Optional[DepthRegions] = self._stage(
            "depth_regions", depth_regions, DepthRegions, depth_regions_of, DepthRegionsError)

    def _stage(self, name: str, value: Any, kind: type, from_model: Callable[[dict[str, str], str], Any],
               damaged: type[Exception]) -> Any:
        """A post-model stage's settings from a Detector argument: `kind` as given, "model" for
        the one the model file carries (None if it carries none), "off" for none."""
        if isinstance(value, kind):
            return value
        if value == FROM_MODEL:
            try:
                return from_model(self.info.extra, str(self.model_path))
            except damaged as exc:  # a damaged model file, said as such
                raise ModelFileError(str(exc)) from exc
        if value == NO_REGIONS:
            return None
        raise ValueError(f"{name} must be '{FROM_MODEL}', '{NO_REGIONS}' or a {kind.__name__}, got {value!r}")

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    def prepare(self, image: np.ndarray, encoding: str = "rgb8") -> tuple[np.ndarray, Geometry]:
        x, geom, _ = self.prepare_with_image(image, encoding)
        return x, geom

    def prepare_with_image(self, image: np.ndarray, encoding: str = "rgb8"
                           ) -> tuple[np.ndarray, Geometry, np.ndarray]:
        """`prepare` plus the frame placed on the model input (uint8), which `refine` needs."""
        return self._prepare_rgb(to_rgb8(image, encoding))

    def _prepare_rgb(self, rgb: np.ndarray) -> tuple[np.ndarray, Geometry, np.ndarray]:
        """`prepare_with_image` of a frame already converted by `to_rgb8` (no second copy)."""
        i = self.info
        return preprocess_with_image(rgb, i.input_size, i.mean, i.std, i.resize_policy)

    def refine(self, score: np.ndarray, geom: Geometry, placed: np.ndarray) -> np.ndarray:
        """The model's score map after the region stage (unchanged without one)."""
        if self.regions is None:
            return score
        score = np.array(score, dtype=np.float32, copy=True)
        box = content_box(score, geom)
        box[...] = lift_regions(box, content_box(placed, geom), self.regions)
        return score

    def frame_heatmap(self, rgb: np.ndarray) -> np.ndarray:
        """One model pass (+ the region stage) over an RGB frame, at the frame's resolution: the
        heatmap without the zoomed band (whose tiles are such frames)."""
        x, geom, placed = self._prepare_rgb(rgb)
        return heatmap_to_source(self.refine(self.backend(x[None])[0], geom, placed), geom)

    def with_zoom(self, rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
        """The frame's heatmap joined with the zoomed band's (unchanged without the stage)."""
        if self.zoom is None:
            return heat
        return join_band(heat, band_heatmap(rgb, self.zoom, self.frame_heatmap), self.zoom)

    def with_depth(self, heat: np.ndarray, depth_m: Optional[np.ndarray],
                   intrinsics: Optional[CameraIntrinsics]) -> tuple[np.ndarray, str]:
        """The heatmap after the depth region stage, and what the stage did (see `Detection`)."""
        if self.depth_regions is None:
            return heat, "off"
        if depth_m is None or intrinsics is None:
            return heat, "no_depth"
        lift = lift_depth_regions(heat, depth_m, intrinsics, self.depth_regions)
        return lift.score, lift.reason

    def heatmap(self, image: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
        """The frame's heatmap from colour alone (the depth region stage: `with_depth`)."""
        rgb = to_rgb8(image, encoding)
        return self.with_zoom(rgb, self.frame_heatmap(rgb))

    def detect(self, image: np.ndarray, encoding: str = "rgb8", depth_m: Optional[np.ndarray] = None,
               intrinsics: Optional[CameraIntrinsics] = None) -> Detection:
        """One frame through the model and its stages. With the frame's aligned depth (HxW metres,
        NaN = no reading; checked against the frame's size) and the colour camera's intrinsics,
        the depth region stage runs too, if the model carries it."""
        t0 = time.perf_counter()
        rgb = to_rgb8(image, encoding)
        x, geom, placed = self._prepare_rgb(rgb)
        t1 = time.perf_counter()
        score = self.backend(x[None])[0]
        t2 = time.perf_counter()
        score = self.refine(score, geom, placed)
        t3 = time.perf_counter()
        heat = self.with_zoom(rgb, heatmap_to_source(score, geom))
        t4 = time.perf_counter()
        heat, depth_stage = self.with_depth(heat, depth_m, intrinsics)
        t5 = time.perf_counter()
        mask, obstacles = threshold_components(heat, self.threshold, self.min_area)
        t6 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                   "regions": (t3 - t2) * 1e3, "zoom": (t4 - t3) * 1e3, "depth_regions": (t5 - t4) * 1e3,
                   "postprocess": (t6 - t5) * 1e3, "total": (t6 - t0) * 1e3}
        return Detection(heat, mask, obstacles, timings, depth_stage)
