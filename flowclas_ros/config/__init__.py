"""Typed training configuration loaded from YAML.

Every key is checked on load: an unknown key (usually a typo), a missing required key or a value of
the wrong type raises `ConfigError` naming the dotted key path, so a bad file fails in the first
second of a run instead of silently training the wrong model.

`schema` holds the dataclasses, `loading` reads, overrides and type-checks YAML, `validation` runs
the range checks; the names below are the package's public interface.
"""
from flowclas_ros.config.loading import apply_override, config_from_dict, load_config
from flowclas_ros.config.schema import (
    AugmentationConfig,
    BackboneConfig,
    CalibrationConfig,
    CameraAugmentationConfig,
    Config,
    ConfigError,
    DataConfig,
    DataSource,
    FlowConfig,
    FlowNegativesOEConfig,
    LossConfig,
    ModelConfig,
    OESourcesConfig,
    OutlierExposureConfig,
    ProceduralFillsConfig,
    ProceduralOEConfig,
    TrainConfig,
)

__all__ = [
    "AugmentationConfig",
    "BackboneConfig",
    "CameraAugmentationConfig",
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataSource",
    "FlowConfig",
    "FlowNegativesOEConfig",
    "LossConfig",
    "ModelConfig",
    "OESourcesConfig",
    "OutlierExposureConfig",
    "ProceduralFillsConfig",
    "ProceduralOEConfig",
    "TrainConfig",
    "apply_override",
    "config_from_dict",
    "load_config",
]
