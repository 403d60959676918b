"""Training a flow on the features of the int8-quantised backbone (`model.backbone.int8_features`).

Why: the flow models the density of the features it was trained on. Under an int8 backbone the
features of a flow trained on fp32 features move off that density; a flow trained on the int8
backbone's own features is scored on what it learned. `Int8Features` runs the same quantised
backbone graph (ONNX Runtime) in the training loop, and `flowclas-ros quantize --backbone`
reproduces it exactly from the calibration frames named in the model's metadata.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from flowclas_ros.config import Config
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import Sample, read_label_or_inlier
from flowclas_ros.data.layouts import evenly_spaced, source_options, source_samples
from flowclas_ros.model.backbone import Backbone
from flowclas_ros.runtime.labels import INLIER
from flowclas_ros.runtime.model_info import BATCH_DIM, INPUT_NAME, OPSET
from flowclas_ros.runtime.processing import label_to_input, preprocess
from flowclas_ros.runtime.quantization import BACKBONE_OPS, QuantizeError, quantize_graph


def calibration_frames(samples: Sequence[Sample], frames: int, input_size: Sequence[int],
                       mean: Sequence[float], std: Sequence[float],
                       resize_policy: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(preprocessed input, inlier mask in input geometry) for `frames` frames spread evenly over
    `samples`, through the runtime's own preprocessing. The same samples and count give the same
    frames, in training (`Int8Features`) and in `quantize_flow`."""
    out = []
    for s in evenly_spaced(samples, frames):
        rgb = read_image_rgb(s.image_path)
        x, geom = preprocess(rgb, tuple(input_size), mean, std, resize_policy)
        label = read_label_or_inlier(s, rgb.shape[:2])  # robot logs: unlabelled, all inlier
        out.append((x, label_to_input(label, geom) == INLIER))
    return out


class Int8Features:
    """Backbone features computed by ONNX Runtime on the int8-quantised backbone graph: what the
    flow of a `model.backbone.int8_features` model trains on, and what its int8 deployment
    computes. Frozen, no gradients; torch tensors in and out."""

    def __init__(self, model_bytes: bytes, description: dict[str, Any], threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.model_bytes = model_bytes  # the quantised backbone graph (ONNX), for inspection
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.description = description  # goes into the export's metadata (INT8_FEATURES_KEY)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().float().cpu().numpy()
        (feats,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(feats).to(images.device)


def int8_features_description(cfg: Config) -> dict[str, Any]:
    """Where an int8-feature model's backbone ranges come from: stored in the export's metadata
    (INT8_FEATURES_KEY), read back by `quantize_flow` as its default calibration frames."""
    src = cfg.data.calibration_source()
    return {"root": str(src.root), "layout": src.layout, "options": source_options(src),
            "frames": cfg.model.backbone.int8_calibration_frames}


def int8_features_for(cfg: Config, backbone: Backbone) -> Int8Features:
    """Quantise `backbone` (the model's frozen torch backbone) with the config's calibration
    frames (`model.backbone.int8_calibration_frames` of the val source, else the first train
    source) and return its feature extractor."""
    src = cfg.data.calibration_source()
    n = cfg.model.backbone.int8_calibration_frames
    samples = source_samples(src)
    if not samples:
        raise QuantizeError(f"no frames in {src.root} to calibrate the int8 backbone on")
    calib = calibration_frames(samples, n, cfg.model.input_size, backbone.mean, backbone.std,
                               cfg.model.resize_policy)
    description = int8_features_description(cfg)
    with tempfile.TemporaryDirectory(prefix="flowclas_int8bb_") as tmp:
        path = Path(tmp) / "backbone.onnx"
        dummy = torch.zeros(1, 3, *cfg.model.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding chatter
            torch.onnx.export(backbone.eval(), (dummy,), str(path), input_names=[INPUT_NAME],
                              output_names=["features"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, "features": {0: BATCH_DIM}})
        proto, _ = quantize_graph(path, [x[None] for x, _ in calib],
                                   lambda node: node.op_type in BACKBONE_OPS)
    return Int8Features(proto.SerializeToString(), description)
