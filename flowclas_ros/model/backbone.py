"""Frozen pretrained feature extractors: the interface and the registry.

FlowCLAS models the density of *frozen* features, so the backbone is a fixed function: it is built
once, put in eval mode, and never receives gradients. Adding a backbone (e.g. a DINOv2 ViT from a
local weights file) means one small module with a `@register_backbone("name")` Backbone subclass,
imported at the bottom of this file; `efficientnet_lite.py` is the example.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn


class Backbone(nn.Module):
    """Maps a normalised RGB batch [N,3,H,W] to one fused feature map [N,C,H/s,W/s].

    `mean`/`std` are the per-channel normalisation (image in [0,1]) the weights were trained with;
    the runtime applies them before the model, and they travel in the exported file's metadata.
    """

    out_channels: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    supported_taps: tuple[int, ...] = ()

    def freeze(self) -> "Backbone":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen BatchNorm statistics: never switch to training mode.
        return super().train(False)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file without unpickling arbitrary objects (weights_only=True)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"backbone weights not found: {path}") from exc
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, KeyError, bad zip, ...
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"backbone weights {path}: not a loadable PyTorch state dict "
                         f"({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"backbone weights {path}: expected a state dict, got {type(state).__name__}")
    return state


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator: make a Backbone available to configs under `name`."""

    def deco(cls: type[Backbone]) -> type[Backbone]:
        BACKBONES[name] = cls
        return cls

    return deco


def build_backbone(name: str, input_size: tuple[int, int], taps: list[int], feature_stride: int,
                   weights: Optional[str] = None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
    return BACKBONES[name](input_size=input_size, taps=taps, feature_stride=feature_stride,
                           weights=weights)


from . import efficientnet_lite  # noqa: E402,F401  - registers the embedded default
