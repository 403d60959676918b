"""The inference backend of the product path: ONNX Runtime (CPU / CUDA / TensorRT providers).

A backend maps a normalised batch [N,3,H,W] float32 to score maps [N,H,W] float32 and exposes the
model's `ModelInfo`. ONNX Runtime is the deployment path and needs no torch; the torch reference
backend (a training checkpoint run eagerly, for parity checks and speed comparisons) lives in
`flowclas_ros.deploy.torch_backend` and plugs into the same `Detector`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from flowclas_ros.runtime.model_info import BATCH_DIM, ModelFileError, ModelInfo, read_model_info

log = logging.getLogger("flowclas_ros.runtime")

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def ort_providers(requested: Sequence[str], available: Sequence[str],
                  trt_cache_dir: Optional[str] = None, trt_fp16: bool = False) -> list:
    """Requested names (aliases or ORT names) -> the ORT provider list to use, in preference
    order. Unavailable ones are skipped with a warning; CPU is always the last resort."""
    chosen: list = []
    for name in requested:
        ort_name = PROVIDER_ALIASES.get(name.lower(), name)
        if ort_name not in available:
            log.warning("execution provider '%s' is not available in this onnxruntime build "
                        "(available: %s); falling back", name, ", ".join(available))
            continue
        if ort_name == "TensorrtExecutionProvider":
            opts = {"trt_engine_cache_enable": True, "trt_fp16_enable": trt_fp16,
                    "trt_engine_cache_path": trt_cache_dir or ".trt_cache"}
            chosen.append((ort_name, opts))
        elif ort_name not in [c if isinstance(c, str) else c[0] for c in chosen]:
            chosen.append(ort_name)
    names = [c if isinstance(c, str) else c[0] for c in chosen]
    if "CPUExecutionProvider" not in names:
        if chosen:
            log.info("adding CPUExecutionProvider as the fallback for unsupported nodes")
        else:
            log.warning("none of the requested execution providers %s is available; using CPU",
                        list(requested))
        chosen.append("CPUExecutionProvider")
    return chosen


class Backend(Protocol):
    """What a Detector runs: normalised [N,3,H,W] float32 -> score maps [N,H,W] float32."""

    name: str
    info: ModelInfo
    providers: list[str]
    path: Path

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeBackend:
    """An exported FlowCLAS ONNX file run by ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("cpu",),
                 threads: int = 0, trt_cache_dir: Optional[str] = None, trt_fp16: bool = False,
                 spinning: bool = True, batch: Optional[int] = 1) -> None:
        """`spinning`: ORT's worker threads busy-wait between operators and runs. On: lowest
        latency; off: far less CPU between camera frames, for a node that shares its cores
        (measured in docs/speed.md). `batch`: the batch size this session runs
        (the graph's batch is dynamic; fixing it lets ORT fold the shape arithmetic at load,
        a measurable share of a small model's frame time); None keeps it dynamic."""
        import onnxruntime as ort

        path = Path(path)
        if path.is_dir():
            raise ModelFileError(f"model path {path} is a directory, not a model file")
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        self.info = read_model_info(path)  # checked before ONNX Runtime allocates anything
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.log_severity_level = 3
        if batch is not None:
            opts.add_free_dimension_override_by_name(BATCH_DIM, batch)
        cache = trt_cache_dir or str(path.parent / ".trt_cache")
        chosen = ort_providers(providers, ort.get_available_providers(), cache, trt_fp16)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types here
            raise ModelFileError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300]})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelFileError(f"{path}: expected one NCHW image input, found "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        shape = inputs[0].shape
        if shape[1] != 3 or tuple(shape[2:]) != tuple(self.info.input_size):
            raise ModelFileError(f"{path}: graph input shape {shape} does not match the metadata "
                                 f"input_size {list(self.info.input_size)} (model file mismatched)")
        self.input_name = inputs[0].name
        self._self_check(path)
        self.providers = self.session.get_providers()
        self.path = path

    def _self_check(self, path: Path) -> None:
        """One frame (the normalisation mean) at load: the graph must map an image to one finite
        score map of the image's size, or the file is not a FlowCLAS model whatever its metadata
        says (an identity graph with copied metadata would answer every frame with garbage)."""
        h, w = self.info.input_size
        try:
            outs = self.session.run(None, {self.input_name: np.zeros((1, 3, h, w), np.float32)})
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types here
            raise ModelFileError(f"{path}: the model fails on a test frame ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc
        if len(outs) != 1 or outs[0].shape != (1, 1, h, w):
            raise ModelFileError(f"{path}: expected one score map of shape (1, 1, {h}, {w}), got "
                                 f"{[o.shape for o in outs]}: not a FlowCLAS model")
        if not np.isfinite(outs[0]).all():
            raise ModelFileError(f"{path}: non-finite scores on a test frame")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self.input_name: batch})
        return out[:, 0]


def open_backend(model_path: str | os.PathLike, providers: Sequence[str] = ("cpu",),
                 **kwargs) -> OnnxRuntimeBackend:
    """An exported `.onnx` model on ONNX Runtime. A training checkpoint (`.pt`) needs torch, which
    the runtime never imports: it is refused with the command that exports it
    (`flowclas_ros.deploy.open_model.open_detector` runs one as the torch reference)."""
    path = Path(model_path)
    if path.suffix == ".pt":
        raise ModelFileError(f"{path} is a training checkpoint; the runtime runs exported models: "
                             f"`flowclas-ros export {path} --out model.onnx`")
    return OnnxRuntimeBackend(path, providers, **kwargs)
