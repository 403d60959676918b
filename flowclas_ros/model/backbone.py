"""Frozen pretrained feature extractors: the interface every backbone implements.

FlowCLAS models the density of *frozen* features, so the backbone is a fixed function: it is built
once, put in eval mode, and never receives gradients. Adding a backbone (e.g. a DINOv2 ViT from a
local weights file) means one small module with a Backbone subclass (`efficientnet_lite.py` is the
example) and one line in `registry.py`.
"""
from __future__ import annotations

from pathlib import Path

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
