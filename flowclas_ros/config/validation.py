"""Range checks of a type-checked `Config`: the constraints that field types cannot express."""
from __future__ import annotations

import dataclasses

from flowclas_ros.config.schema import Config, ConfigError
from flowclas_ros.data.camera_model import CameraModel
from flowclas_ros.runtime.model_info import MAX_INPUT_SIDE


def _validate(cfg: Config) -> None:
    """Range checks that types cannot express."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    m = cfg.model
    need(len(m.input_size) == 2 and all(32 <= v <= MAX_INPUT_SIDE for v in m.input_size), "model.input_size",
         f"must be [height, width], each 32..{MAX_INPUT_SIDE} (the runtime refuses larger models), "
         f"got {m.input_size}")
    from flowclas_ros.model.registry import BACKBONES  # the registry knows which backbones and taps exist

    need(m.backbone.name in BACKBONES, "model.backbone.name",
         f"unknown backbone '{m.backbone.name}' (known: {', '.join(sorted(BACKBONES))})")
    taps = BACKBONES[m.backbone.name].supported_taps
    need(len(m.backbone.taps) >= 1 and set(m.backbone.taps) <= set(taps), "model.backbone.taps",
         f"must be a non-empty subset of {list(taps)}")
    need(m.backbone.feature_stride in m.backbone.taps, "model.backbone.feature_stride",
         "must be one of model.backbone.taps")
    coarsest = max(m.backbone.taps)
    need(all(v % coarsest == 0 for v in m.input_size), "model.input_size",
         f"each side must be a multiple of the coarsest backbone tap stride ({coarsest})")
    crop = cfg.train.crop_size
    need(crop is None or (len(crop) == 2 and all(c % coarsest == 0 and 0 < c <= v for c, v in
                                                  zip(crop, m.input_size))), "train.crop_size",
         f"must be null or [height, width], each a multiple of {coarsest} and at most model.input_size")
    need(m.backbone.int8_calibration_frames >= 1, "model.backbone.int8_calibration_frames",
         "must be >= 1")
    need(m.flow.steps >= 1, "model.flow.steps", "must be >= 1")
    need(m.flow.hidden_channels >= 1, "model.flow.hidden_channels", "must be >= 1")
    need(len(m.flow.kernel_sizes) >= 1 and all(k in (1, 3, 5) for k in m.flow.kernel_sizes),
         "model.flow.kernel_sizes", "must be a non-empty list of 1, 3 or 5")
    need(m.flow.clamp > 0, "model.flow.clamp", "must be > 0")
    need(m.flow.positional_channels >= 0 and m.flow.positional_channels % 4 == 0,
         "model.flow.positional_channels", "must be >= 0 and a multiple of 4")
    need(m.projection_channels >= 1, "model.projection_channels", "must be >= 1")
    need(m.score_blur_sigma >= 0, "model.score_blur_sigma", "must be >= 0")
    need(m.score_guided_radius >= 0, "model.score_guided_radius", "must be >= 0 (0 = bilinear)")
    need(m.score_guided_eps > 0, "model.score_guided_eps", "must be > 0")
    need(len(cfg.data.train) >= 1, "data.train", "needs at least one source")
    for i, src in enumerate(cfg.data.train):
        need(src.stride >= 1, f"data.train[{i}].stride", "must be >= 1")
    need(cfg.data.val is None or cfg.data.val.stride >= 1, "data.val.stride", "must be >= 1")
    oe = cfg.outlier_exposure
    need(0.0 <= oe.probability <= 1.0, "outlier_exposure.probability", "must be in [0, 1]")
    need(len(oe.count) == 2 and 1 <= oe.count[0] <= oe.count[1], "outlier_exposure.count",
         "must be [min, max] with 1 <= min <= max")
    need(len(oe.scale) == 2 and 0 < oe.scale[0] <= oe.scale[1] <= 1, "outlier_exposure.scale",
         "must be [min, max] with 0 < min <= max <= 1")
    need(oe.size_sampling in ("uniform", "log_uniform"), "outlier_exposure.size_sampling",
         "must be uniform or log_uniform")
    need(0.0 <= oe.camouflage <= 1.0, "outlier_exposure.camouflage", "must be in [0, 1]")
    weights = dataclasses.asdict(oe.sources)
    for name, w in weights.items():
        need(w >= 0, f"outlier_exposure.sources.{name}", "must be >= 0")
    need(not oe.enabled or sum(weights.values()) > 0, "outlier_exposure.sources",
         "needs a weight > 0 when outlier_exposure.enabled is true")
    need(not oe.enabled or oe.sources.cutouts == 0 or oe.bank is not None, "outlier_exposure.bank",
         "is required when outlier_exposure.enabled is true and sources.cutouts > 0")
    pr = oe.procedural
    need(len(pr.count) == 2 and 1 <= pr.count[0] <= pr.count[1], "outlier_exposure.procedural.count",
         "must be [min, max] with 1 <= min <= max")
    for key in ("scale", "coverage", "opacity"):
        v = getattr(pr, key)
        need(len(v) == 2 and 0 < v[0] <= v[1] <= 1, f"outlier_exposure.procedural.{key}",
             "must be [min, max] with 0 < min <= max <= 1")
    need(1 <= pr.min_change <= 128, "outlier_exposure.procedural.min_change", "must be in 1..128")
    need(1 <= pr.octaves <= 8, "outlier_exposure.procedural.octaves", "must be in 1..8")
    need(len(pr.frequency) == 2 and 1 <= pr.frequency[0] <= pr.frequency[1],
         "outlier_exposure.procedural.frequency", "must be [min, max] with 1 <= min <= max")
    fills = dataclasses.asdict(pr.fills)
    need(all(v >= 0 for v in fills.values()) and sum(fills.values()) > 0,
         "outlier_exposure.procedural.fills", "weights must be >= 0 with a positive sum")
    fn = oe.flow_negatives
    need(len(fn.cells) == 2 and 1 <= fn.cells[0] <= fn.cells[1], "outlier_exposure.flow_negatives.cells",
         "must be [min, max] with 1 <= min <= max")
    need(len(fn.tau) == 2 and 1 < fn.tau[0] <= fn.tau[1], "outlier_exposure.flow_negatives.tau",
         "must be [min, max] with 1 < min <= max (outside the inlier typical set)")
    need(0 <= fn.anchor <= 1, "outlier_exposure.flow_negatives.anchor", "must be in [0, 1]")
    need(fn.max_norm_ratio >= 1, "outlier_exposure.flow_negatives.max_norm_ratio", "must be >= 1")
    need(fn.nll_margin >= 0, "outlier_exposure.flow_negatives.nll_margin", "must be >= 0 (0 = off)")
    fp = oe.flow_patches
    key = "outlier_exposure.flow_patches"
    need(len(fp.count) == 2 and 1 <= fp.count[0] <= fp.count[1], f"{key}.count",
         "must be [min, max] with 1 <= min <= max")
    need(len(fp.scale) == 2 and 0 < fp.scale[0] <= fp.scale[1] <= 1, f"{key}.scale",
         "must be [min, max] with 0 < min <= max <= 1")
    shapes = dataclasses.asdict(fp.shapes)
    need(all(v >= 0 for v in shapes.values()) and sum(shapes.values()) > 0, f"{key}.shapes",
         "weights must be >= 0 with a positive sum")
    need(0 <= fp.min_change <= 128, f"{key}.min_change", "must be in [0, 128] (0 = off)")
    need(len(fp.temperature) == 2 and 0 < fp.temperature[0] <= fp.temperature[1], f"{key}.temperature",
         "must be [min, max] with 0 < min <= max (> 1 samples beyond the inlier set)")
    need(0 <= fp.border_quantile < 1, f"{key}.border_quantile", "must be in [0, 1)")
    need(fp.border_width > 0, f"{key}.border_width", "must be > 0 (bits per dimension)")
    need(1 <= fp.levels <= 5, f"{key}.levels", "must be in 1..5")
    multiple = 2 ** fp.levels
    need(len(fp.sizes) >= 1 and all(multiple <= s <= 512 and s % multiple == 0 for s in fp.sizes),
         f"{key}.sizes", f"must be a non-empty list of sides in {multiple}..512, multiples of "
         f"2**levels = {multiple}")
    need(fp.bank_size >= len(fp.sizes), f"{key}.bank_size", "must be >= the number of sizes")
    need(fp.steps >= 1, f"{key}.steps", "must be >= 1")
    need(fp.hidden_channels >= 1, f"{key}.hidden_channels", "must be >= 1")
    need(fp.clamp > 0, f"{key}.clamp", "must be > 0")
    need(fp.crop >= multiple and fp.crop % multiple == 0, f"{key}.crop",
         f"must be a multiple of 2**levels = {multiple}")
    need(len(fp.frame_scales) >= 1 and all(s >= 1 for s in fp.frame_scales), f"{key}.frame_scales",
         "must be a non-empty list of downsampling factors >= 1")
    need(fp.iterations >= 1, f"{key}.iterations", "must be >= 1")
    need(fp.batch_size >= 2, f"{key}.batch_size", "must be >= 2")
    need(fp.lr > 0, f"{key}.lr", "must be > 0")
    need(fp.max_frames >= 16, f"{key}.max_frames", "must be >= 16")
    need(cfg.loss.contrastive_weight >= 0, "loss.contrastive_weight", "must be >= 0")
    need(cfg.loss.temperature > 0, "loss.temperature", "must be > 0")
    need(cfg.loss.samples_per_class >= 2, "loss.samples_per_class", "must be >= 2")
    need(cfg.loss.contrastive_weight == 0 or oe.enabled, "loss.contrastive_weight",
         "> 0 needs outlier_exposure.enabled (the contrastive loss needs anomaly pixels)")
    t = cfg.train
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.max_steps >= 1, "train.max_steps", "must be >= 1")
    need(t.lr > 0, "train.lr", "must be > 0")
    need(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    need(t.log_every >= 1, "train.log_every", "must be >= 1")
    need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), "train.device",
         "must be auto, cpu, cuda or cuda:N")
    aug = cfg.augmentation
    need(0.0 <= aug.probability <= 1.0, "augmentation.probability", "must be in [0, 1]")
    try:
        CameraModel.from_mapping(dataclasses.asdict(aug.camera))
    except ValueError as exc:
        raise ConfigError(f"augmentation.camera: {exc}") from None
    need(0 < cfg.calibration.inlier_fpr < 1, "calibration.inlier_fpr", "must be in (0, 1)")
    need(cfg.calibration.max_frames >= 1, "calibration.max_frames", "must be >= 1")
