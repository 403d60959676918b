"""FlowCLAS: frozen backbone -> normalizing flow -> per-pixel anomaly score map.

`FlowHead` holds everything that trains (flow, base density, contrastive projection); `FlowCLAS`
adds the frozen backbone and the score post-processing (normalisation, blur, image-guided or
bilinear upsampling) that the exporter bakes into the ONNX graph, so the deployed file cannot drift
from the training code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.config import ModelConfig
from flowclas_ros.model import score
from flowclas_ros.model.backbone import Backbone
from flowclas_ros.model.flow import NormalizingFlow
from flowclas_ros.model.guided_upsampling import guided_upsample
from flowclas_ros.model.registry import build_backbone


class FlowHead(nn.Module):
    """The trainable part: features -> (z, log|det J|), a diagonal Gaussian base density with a
    learned per-channel mean / log-std shared by all positions (as the authors do), and a 1x1
    projection used only by the contrastive loss (dropped at export)."""

    def __init__(self, channels: int, cfg: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        f = cfg.flow
        self.flow = NormalizingFlow(channels, f.steps, f.hidden_channels, f.kernel_sizes, f.clamp,
                                    f.positional_channels, seed=seed)
        self.mu = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_sigma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.projection = nn.Conv2d(channels, cfg.projection_channels, 1)
        self.include_logdet = cfg.score_includes_logdet

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow(feats)

    def nll_per_dim(self, z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        """Exact negative log-likelihood per position and dimension [N,h,w] (`score.nll_per_dim`)."""
        return score.nll_per_dim(z, logdet, self.mu, self.log_sigma)

    def raw_score(self, z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        """Un-normalised anomaly score per position [N,h,w] (`score.raw_score`)."""
        return score.raw_score(z, logdet, self.mu, self.log_sigma, self.include_logdet)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """L2-normalised contrastive embedding [N,P,h,w]."""
        return F.normalize(self.projection(z), dim=1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]


class FlowCLAS(nn.Module):
    """Image batch (normalised RGB, [N,3,H,W]) -> anomaly score map [N,1,H,W].

    The score is defined in `flowclas_ros.model.score`; offset/scale come from calibration, so 1.0
    means the calibrated inlier quantile; both are buffers, saved with the model and baked into the
    export.
    """

    def __init__(self, cfg: ModelConfig, seed: int = 0, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.backbone = backbone or build_backbone(b.name, tuple(cfg.input_size), b.taps,
                                                   b.feature_stride, b.weights)
        self.head = FlowHead(self.backbone.out_channels, cfg, seed=seed)
        self.register_buffer("score_offset", torch.tensor(0.0))
        self.register_buffer("score_scale", torch.tensor(1.0))
        sigma = cfg.score_blur_sigma
        self.blur_enabled = sigma > 0  # a Python flag, so the ONNX trace has no data-dependent if
        self.register_buffer("blur", gaussian_kernel(sigma) if sigma > 0 else torch.zeros(0))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def grid_score(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised (and optionally smoothed) score on the feature grid, [N,1,h,w]."""
        z, logdet = self.head(feats)
        s = (self.head.raw_score(z, logdet) - self.score_offset) / self.score_scale
        s = s.unsqueeze(1)
        if self.blur_enabled:
            r = self.blur.shape[-1] // 2
            s = F.conv2d(F.pad(s, (r, r, r, r), mode="replicate"), self.blur)
        return s

    def upsample(self, score: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Grid score -> input resolution: image-guided when `score_guided_radius` > 0."""
        if self.cfg.score_guided_radius > 0:
            return guided_upsample(score, images, self.cfg.backbone.feature_stride,
                                   self.cfg.score_guided_radius,
                                   self.cfg.score_guided_eps)
        return F.interpolate(score, size=tuple(images.shape[-2:]), mode="bilinear",
                             align_corners=False)

    def score_from_features(self, feats: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of `images` -> score map [N,1,H,W]: the graph after the backbone, so
        calibration on other features (int8) scores exactly as the export does."""
        return self.upsample(self.grid_score(feats), images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score_from_features(self.backbone(images), images)
