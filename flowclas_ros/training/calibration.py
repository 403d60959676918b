"""Calibration: the score normalisation and obstacle threshold of a trained model, and recalibration.

The rule (`flowclas_ros.model.score.normalisation_from_inliers`) is applied to the inlier pixels
of the calibration frames (`DataConfig.calibration_source`: held-out val frames when configured,
else the first training source), scored exactly as the exported graph scores them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from flowclas_ros.config import Config, ConfigError, apply_override, config_from_dict
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import Sample, read_label_or_inlier
from flowclas_ros.data.layouts import evenly_spaced, source_samples
from flowclas_ros.model.flowclas import FlowCLAS
from flowclas_ros.model.score import normalisation_from_inliers
from flowclas_ros.runtime.labels import ANOMALY, INLIER
from flowclas_ros.runtime.processing import label_to_input, preprocess
from flowclas_ros.training.checkpoint import TrainingError, load_checkpoint, save_checkpoint
from flowclas_ros.training.devices import pick_device
from flowclas_ros.training.int8_features import int8_features_for

log = logging.getLogger("flowclas_ros.train")


def calibration_samples(cfg: Config) -> tuple[list[Sample], str]:
    """At most `calibration.max_frames` frames of the calibration source, evenly spaced."""
    src = cfg.data.calibration_source()
    return evenly_spaced(source_samples(src), cfg.calibration.max_frames), src.root


def feature_extractor(model: FlowCLAS, cfg: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the flow trains and calibrates on: the torch backbone's features, or, with
    `model.backbone.int8_features`, those of the same backbone quantised to int8 (ONNX Runtime)."""
    if not cfg.model.backbone.int8_features:
        return model.features
    return int8_features_for(cfg, model.backbone)


@torch.no_grad()
def calibrate(model: FlowCLAS, cfg: Config, device: torch.device,
              extract: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, Any]:
    """Score normalisation and threshold from the inlier pixels of the calibration frames, each
    label read in its layout's own coding (`normalisation_from_inliers` says the rule: the
    threshold is 1.0 by construction). `extract`: the training's features (default:
    `feature_extractor`)."""
    extract = extract or feature_extractor(model, cfg)
    model.eval()
    model.score_offset.fill_(0.0)
    model.score_scale.fill_(1.0)
    samples, root = calibration_samples(cfg)
    m = cfg.model
    mean, std = model.backbone.mean, model.backbone.std
    values = []
    unlabelled = anomaly_frames = 0
    for s in samples:
        rgb = read_image_rgb(s.image_path)
        label = read_label_or_inlier(s, rgb.shape[:2])
        unlabelled += not s.has_label
        anomaly_frames += s.has_label and bool(np.any(label == ANOMALY))
        x, geom = preprocess(rgb, m.input_size, mean, std, m.resize_policy)
        images = torch.from_numpy(x[None]).to(device)
        score = model.score_from_features(extract(images), images)[0, 0].cpu().numpy()
        inl = score[label_to_input(label, geom) == INLIER]
        values.append(inl[:: max(1, inl.size // 20000)])
    pooled = np.concatenate(values).astype(np.float64)
    fpr = cfg.calibration.inlier_fpr
    if pooled.size == 0:
        raise TrainingError(f"calibration: the {len(samples)} calibration frames of {root} have no "
                            "inlier pixel; no model written")
    bad = int(pooled.size - np.count_nonzero(np.isfinite(pooled)))
    if bad:
        raise TrainingError(f"calibration: {bad} of {pooled.size} inlier-pixel scores are NaN or "
                            f"infinite (a diverged flow); no model written; lower train.lr "
                            f"(now {cfg.train.lr:g})")
    offset, scale = normalisation_from_inliers(pooled, fpr)
    if not (np.isfinite(offset) and np.isfinite(scale) and scale > 0):
        raise TrainingError(f"calibration: non-finite score normalisation (offset {offset}, scale "
                            f"{scale}); no model written")
    model.train()
    caveats = calibration_caveats(cfg.data.val is None, len(samples), unlabelled, anomaly_frames)
    for c in caveats:
        log.warning("calibration on %s: %s", root, c)
    rule = f"inlier-pixel FPR {100 * fpr:g}% on {len(samples)} frames of {root}"
    return {"score_offset": offset, "score_scale": scale, "threshold": 1.0,
            "threshold_rule": "; ".join([rule, *caveats]), "caveats": caveats,
            "frames": len(samples), "inlier_pixels": int(pooled.size)}


def calibration_caveats(from_training: bool, frames: int, unlabelled: int,
                        anomaly_frames: int) -> list[str]:
    """What the threshold could not take into account, in words for the training log and the
    model's threshold rule: a threshold set on training frames, or on frames taken as inliers
    for want of labels, is not the held-out, labelled calibration the rule assumes."""
    caveats = []
    if from_training:
        caveats.append("set on TRAINING frames (no data.val configured): false alarms on new "
                       "scenes will be higher than this FPR")
    if unlabelled:
        caveats.append(f"{unlabelled} of {frames} calibration frames have no labels and were taken "
                       "as all inlier (obstacles in them raise the threshold)")
    if unlabelled < frames and anomaly_frames == 0:
        caveats.append("no anomaly pixel in the labelled calibration frames: the threshold was "
                       "not checked against obstacles")
    return caveats


# Keys that only change post-processing / calibration: editable on a trained checkpoint.
POSTPROCESS_KEYS = ("model.score_blur_sigma", "model.score_includes_logdet",
                    "model.score_guided_radius", "model.score_guided_eps",
                    "calibration.inlier_fpr", "calibration.max_frames")


def recalibrate(checkpoint: str | os.PathLike, out: str | os.PathLike,
                overrides: Optional[list[str]] = None, device: str = "auto") -> Path:
    """Change post-processing settings of a trained model (score smoothing, log-det in the score,
    guided upsampling, the calibration rule; also the input size when the flow has no positional
    conditioning) and recalibrate, without retraining. Writes a new checkpoint whose config
    records the change (new config hash, `recalibrated_from` = the old one)."""
    ckpt = load_checkpoint(checkpoint)
    data = ckpt["config"]
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if key == "model.input_size":
            # The backbone and the flow are fully convolutional: a new input size is a deployment
            # choice (speed vs small-obstacle recall), unless positions condition the flow.
            if data["model"]["flow"].get("positional_channels", 0) > 0:
                raise ConfigError("'model.input_size' cannot change without retraining: this model's "
                                  "flow is conditioned on positions (model.flow.positional_channels > 0)")
        elif key not in POSTPROCESS_KEYS:
            raise ConfigError(f"'{key}' cannot change without retraining (allowed: "
                              f"{', '.join(POSTPROCESS_KEYS)}, model.input_size)")
        apply_override(data, item)
    cfg = config_from_dict(data)
    dev = pick_device(device)
    model = FlowCLAS(cfg.model, seed=cfg.seed).to(dev)
    model.head.load_state_dict(ckpt["head"])
    calibration = calibrate(model, cfg, dev)
    path = Path(out)
    save_checkpoint(path, dict(ckpt, config=cfg.to_dict(), config_sha256=cfg.sha256(),
                               calibration=calibration, recalibrated_from=ckpt["config_sha256"]))
    return path
