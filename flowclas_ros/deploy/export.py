"""Checkpoint -> one ONNX file: backbone + flow + score + normalisation + blur + upsampling.

Everything the runtime needs (input size, mean/std, resize policy, score normalisation, calibrated
threshold, model version, training-config hash) is written to the ONNX metadata_props, so the file
alone is the model. `check_parity` runs ONNX Runtime against torch on real frames.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from flowclas_ros import __version__
from flowclas_ros.config import Config
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.layouts import evenly_spaced, load_layout, source_samples
from flowclas_ros.deploy.onnx_metadata import set_metadata
from flowclas_ros.model.flowclas import FlowCLAS
from flowclas_ros.runtime.backends import OnnxRuntimeBackend
from flowclas_ros.runtime.model_info import (
    BATCH_DIM,
    INPUT_NAME,
    INT8_FEATURES_KEY,
    OPSET,
    OUTPUT_NAME,
    ModelInfo,
)
from flowclas_ros.runtime.processing import preprocess
from flowclas_ros.training.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from flowclas_ros.training.int8_features import int8_features_description

log = logging.getLogger("flowclas_ros.deploy.export")



def model_info(cfg: Config, ckpt: dict, model: FlowCLAS) -> ModelInfo:
    cal = ckpt.get("calibration")
    if cal is None:
        raise CheckpointError("checkpoint has no calibration (training did not finish); run "
                         "`flowclas-ros train --resume` to completion first")
    return ModelInfo(
        input_size=tuple(cfg.model.input_size), mean=tuple(model.backbone.mean),
        std=tuple(model.backbone.std), resize_policy=cfg.model.resize_policy,
        threshold=float(cal["threshold"]), threshold_rule=str(cal["threshold_rule"]),
        score_offset=float(cal["score_offset"]), score_scale=float(cal["score_scale"]),
        model_version=f"{__version__}+{cfg.sha256()[:8]}.s{ckpt['step']}",
        config_sha256=cfg.sha256(), backbone=cfg.model.backbone.name,
        feature_stride=cfg.model.backbone.feature_stride,
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        extra={"training_steps": str(ckpt["step"]), "producer": f"flowclas_ros {__version__}",
               "contrastive_weight": str(cfg.loss.contrastive_weight),
               "outlier_exposure": str(cfg.outlier_exposure.enabled).lower(),
               "outlier_exposure_sources": ",".join(
                   f"{k}:{v:g}" for k, v in cfg.outlier_exposure.source_weights().items()) or "none",
               **_int8_features_metadata(cfg)})


def _int8_features_metadata(cfg: Config) -> dict[str, str]:
    """For a flow trained on int8 backbone features: where the backbone's int8 ranges came from,
    so `flowclas-ros quantize --backbone` reproduces that backbone."""
    if not cfg.model.backbone.int8_features:
        return {}
    return {INT8_FEATURES_KEY: json.dumps(int8_features_description(cfg))}


def load_model_for_export(checkpoint: str | os.PathLike) -> tuple[FlowCLAS, ModelInfo]:
    """Rebuild the calibrated FlowCLAS model of a finished checkpoint, in eval mode."""
    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt)
    model = FlowCLAS(cfg.model, seed=cfg.seed)
    model.head.load_state_dict(ckpt["head"])
    info = model_info(cfg, ckpt, model)
    model.score_offset.fill_(info.score_offset)
    model.score_scale.fill_(info.score_scale)
    return model.eval(), info


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike) -> ModelInfo:
    """Write the ONNX graph (opset 17, dynamic batch) with the model's metadata; atomic."""
    import onnx

    model, info = load_model_for_export(checkpoint)
    h, w = info.input_size
    dummy = torch.zeros(1, 3, h, w)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding chatter
        torch.onnx.export(model, (dummy,), str(tmp), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}})
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    set_metadata(proto, info)
    proto.doc_string = "FlowCLAS anomaly score map (flowclas_ros); see metadata_props"
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    return info


def check_parity(checkpoint: str | os.PathLike, onnx_path: str | os.PathLike,
                 images: Iterable[np.ndarray]) -> dict[str, float]:
    """Run the same preprocessed frames through torch and ONNX Runtime; report the max abs
    difference of the score maps, absolute and relative to the torch maps' score range."""
    model, info = load_model_for_export(checkpoint)
    ort_backend = OnnxRuntimeBackend(onnx_path, ("cpu",))
    max_abs, lo, hi, n = 0.0, np.inf, -np.inf, 0
    for rgb in images:
        x, _ = preprocess(rgb, info.input_size, info.mean, info.std, info.resize_policy)
        with torch.no_grad():
            ref = model(torch.from_numpy(x[None]))[0, 0].numpy()
        got = ort_backend(x[None])[0]
        max_abs = max(max_abs, float(np.abs(ref - got).max()))
        lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        n += 1
    if n == 0:
        raise ValueError("parity check needs at least one image")
    rng = max(hi - lo, 1e-12)
    return {"frames": n, "max_abs_diff": max_abs, "score_range": rng, "relative": max_abs / rng}


def parity_images(cfg: Config, limit: int = 4, data_dir: Optional[str] = None) -> list[np.ndarray]:
    """Real frames for the parity check: `data_dir` (generic layout) or the calibration source."""
    samples = (load_layout("generic", data_dir) if data_dir is not None
               else source_samples(cfg.data.calibration_source()))
    return [read_image_rgb(s.image_path) for s in evenly_spaced(samples, limit)]
