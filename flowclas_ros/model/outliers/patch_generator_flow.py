"""A multi-scale normalizing flow over RGB image patches: the generator of the `flow_patches` OE
source (NFlowJS-style negatives drawn in image space).

Why hand-written: it reuses this package's flow blocks (`model/flow.py`: ActNorm, the soft-clamped
affine coupling with a zero-initialised conv subnet) so there is one copy of them, and it must be
fully convolutional: one trained model has to evaluate and sample 16x16 to 128x128 patches. The
maintained libraries do not give that as is: normflows' multi-scale Glow (`MultiscaleFlow` +
`GlowBase`) draws its base samples at the one latent shape it was built with, zuko models vectors
only, and the PyPI FrEIA 0.2 is the stale snapshot `model/flow.py` already avoids. The generator is
a training-time tool (never exported), so ONNX export does not constrain it.

Architecture (Glow / RealNVP): pixels u in {0..255} are dequantised with uniform noise and scaled
to x = (u + U[0, 1)) / 256 - 0.5. Each of `levels` levels squeezes 2x2 pixels into channels, runs
`steps` x (ActNorm -> invertible 1x1 conv (LU) -> affine coupling), then factors half of the
channels out under a Gaussian whose mean and log-std a zero-initialised 3x3 conv predicts from the
other half (Glow's split prior). The last level's latent has a learned per-channel Gaussian. Every
density is per position, so the model applies to any patch side divisible by 2**levels.
`bits_per_dim` is the discrete negative log-likelihood of 8-bit pixels in bits per sub-pixel
(the dequantised density + the log 256 of the scaling), the usual likelihood unit for images.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from flowclas_ros.model.flow import ActNorm, AffineCoupling

__all__ = ["InvertibleConv1x1", "PatchFlow", "squeeze", "unsqueeze"]


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 4C, H/2, W/2] (each 2x2 block of pixels becomes channels)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, 2 * h, 2 * w)


class InvertibleConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parametrised so log|det W| is a sum of log-scales.
    `forward(x, rev)` -> (y, per-position log|det J| [N, H, W]), as the blocks of model/flow.py."""

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=g))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        weight = self.weight()
        logdet = self.log_s.sum().expand(n, h, w)
        if rev:
            return nn.functional.conv2d(x, torch.inverse(weight).view(c, c, 1, 1)), -logdet
        return nn.functional.conv2d(x, weight.view(c, c, 1, 1)), logdet


class _Step(nn.Module):
    """ActNorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels: int, hidden: int, kernel_sizes: Sequence[int], clamp: float,
                 seed: int) -> None:
        super().__init__()
        self.norm = ActNorm(channels)
        self.mix = InvertibleConv1x1(channels, seed)
        self.coupling = AffineCoupling(channels, hidden, list(kernel_sizes), clamp)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if rev:
            x, ld3 = self.coupling(x, rev=True)
            x, ld2 = self.mix(x, rev=True)
            x, ld1 = self.norm(x, rev=True)
        else:
            x, ld1 = self.norm(x)
            x, ld2 = self.mix(x)
            x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3


def _gaussian_logp(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-sample log N(x; mean, exp(log_std)^2), summed over channels and positions -> [N]."""
    logp = -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return logp.flatten(1).sum(1)


class PatchFlow(nn.Module):
    """Multi-scale flow over RGB patches (module docstring). Patch sides must be multiples of
    ``2 ** levels``."""

    def __init__(self, levels: int = 3, steps: int = 4, hidden: int = 48,
                 kernel_sizes: Sequence[int] = (3, 1, 3), clamp: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        if levels < 1 or steps < 1 or hidden < 1:
            raise ValueError(f"PatchFlow: levels, steps and hidden must be >= 1, got {levels}, {steps}, {hidden}")
        self.levels = levels
        self.blocks = nn.ModuleList()
        self.priors = nn.ModuleList()
        c = 3
        for level in range(levels):
            c *= 4
            self.blocks.append(nn.ModuleList(
                _Step(c, hidden, kernel_sizes, clamp, seed * 1000 + 10 * level + k) for k in range(steps)))
            if level < levels - 1:
                prior = nn.Conv2d(c // 2, c, 3, padding=1)  # -> mean, log-std of the factored half
                nn.init.zeros_(prior.weight)
                nn.init.zeros_(prior.bias)
                self.priors.append(prior)
                c //= 2
        self.top_mean = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.top_log_std = nn.Parameter(torch.zeros(1, c, 1, 1))

    @property
    def multiple(self) -> int:
        return 2 ** self.levels

    def _check(self, h: int, w: int) -> None:
        if h % self.multiple or w % self.multiple or h < self.multiple or w < self.multiple:
            raise ValueError(f"PatchFlow: patch sides must be positive multiples of {self.multiple}, "
                             f"got {h}x{w}")

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Continuous patches x in [-0.5, 0.5] [N, 3, H, W] -> (standardised latents, one per
        level, finest first; log-density [N] in nats)."""
        self._check(*x.shape[-2:])
        total = x.new_zeros(x.shape[0])
        eps: list[torch.Tensor] = []
        for level, steps in enumerate(self.blocks):
            x = squeeze(x)
            for step in steps:
                x, ld = step(x)
                total = total + ld.flatten(1).sum(1)
            if level < self.levels - 1:
                keep, out = x.chunk(2, dim=1)
                mean, log_std = self.priors[level](keep).chunk(2, dim=1)
                x = keep
            else:
                out, mean, log_std = x, self.top_mean, self.top_log_std
            total = total + _gaussian_logp(out, mean, log_std)
            eps.append((out - mean) * torch.exp(-log_std))
        return eps, total

    def decode(self, eps: Sequence[torch.Tensor], temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The exact inverse of :meth:`encode`: standardised latents (finest level first) ->
        continuous patches; every latent's deviation from its mean is scaled by `temperature`
        (a number, or a tensor broadcasting over [N, C, H, W], e.g. one per patch [N, 1, 1, 1])."""
        x = self.top_mean + temperature * torch.exp(self.top_log_std) * eps[-1]
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                mean, log_std = self.priors[level](x).chunk(2, dim=1)
                x = torch.cat([x, mean + temperature * torch.exp(log_std) * eps[level]], dim=1)
            for step in reversed(self.blocks[level]):
                x, _ = step(x, rev=True)
            x = unsqueeze(x)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log-density (nats) of continuous patches x in [-0.5, 0.5], [N, 3, H, W] -> [N]."""
        return self.encode(x)[1]

    def latent_shapes(self, n: int, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """Shapes of the standardised latents of ``n`` patches of ``size`` (finest level first)."""
        h, w = int(size[0]), int(size[1])
        self._check(h, w)
        shapes, c = [], 3
        for level in range(self.levels):
            c, h, w = c * 4, h // 2, w // 2
            if level < self.levels - 1:
                c //= 2
            shapes.append((n, c, h, w))
        return shapes

    @staticmethod
    def dequantize(pixels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8-valued patches (any real dtype, 0..255) -> x = (u + U[0, 1)) / 256 - 0.5."""
        noise = torch.rand(pixels.shape, generator=generator, dtype=torch.float32).to(pixels.device)
        return (pixels.float() + noise) / 256.0 - 0.5

    def bits_per_dim(self, pixels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Discrete NLL of 8-bit patches [N, 3, H, W] (values 0..255) in bits per sub-pixel -> [N]
        (one dequantisation draw)."""
        dims = pixels[0].numel()
        nll = -self.log_prob(self.dequantize(pixels, generator)) + dims * math.log(256.0)
        return nll / (dims * math.log(2.0))

    @torch.no_grad()
    def sample(self, n: int, size: tuple[int, int], temperature: float | tuple[float, float] = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` patches of ``size`` (h, w) as uint8 [n, 3, h, w]: every latent is drawn from its
        Gaussian with the std multiplied by the temperature (> 1: beyond the inlier typical set;
        a (low, high) pair: one temperature per patch, uniform in that range), then the exact
        inverse flow maps it to pixels (values it pushes out of range are clipped)."""
        device = self.top_mean.device
        eps = [torch.randn(shape, generator=generator).to(device) for shape in self.latent_shapes(n, size)]
        if isinstance(temperature, (tuple, list)):
            lo, hi = float(temperature[0]), float(temperature[1])
            t = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=generator).to(device)
        else:
            t = torch.full((n, 1, 1, 1), float(temperature), device=device)
        x = torch.nan_to_num(self.decode(eps, t), nan=0.0, posinf=1.0, neginf=-1.0)
        return torch.clamp(torch.floor((x + 0.5) * 256.0), 0, 255).to(torch.uint8)
