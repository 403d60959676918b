"""Invertible building blocks of the normalizing flow, written by hand.

Why hand-written: the PyPI FrEIA (0.2) is a 2022 snapshot whose block semantics differ from its
master branch, and normflows' Glow blocks do not export to ONNX. These blocks use only Conv, Tanh,
Exp, Gather, Concat and elementwise ops, so the whole flow exports to ONNX opset 17 and runs in
ONNX Runtime / TensorRT unchanged. Each block follows the FrEIA habit: `forward(x, rev=False)`
returns `(y, logdet)` where `logdet` is the per-position log|det J| of shape [N, H, W], so every
block can be tested for invertibility on its own.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class ActNorm(nn.Module):
    """Per-channel affine y = (x + loc) * exp(log_scale), initialised from the first batch.

    Data-dependent init (Glow) makes the first step start with unit-variance activations. The
    `initialized` flag is a buffer, so it is saved in checkpoints and broadcast by DDP.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not rev and int(self.initialized) == 0:
            self._initialize(x)
        n, _, h, w = x.shape
        logdet = self.log_scale.sum().expand(n, h, w)
        if rev:
            return x * torch.exp(-self.log_scale) - self.loc, -logdet
        return (x + self.loc) * torch.exp(self.log_scale), logdet


class Permutation(nn.Module):
    """A fixed random channel permutation (volume preserving: log|det| = 0)."""

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(channels, generator=g)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse", torch.argsort(perm))

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        idx = self.inverse if rev else self.perm
        return x.index_select(1, idx), x.new_zeros(n, h, w)


def subnet(in_channels: int, out_channels: int, hidden: int, kernel_sizes: list[int]) -> nn.Sequential:
    """Conv subnet of a coupling block; the last conv is zero-initialised so the block starts as
    the identity (stable start for deep flows, as in the authors' code)."""
    layers: list[nn.Module] = []
    c = in_channels
    for i, k in enumerate(kernel_sizes):
        last = i == len(kernel_sizes) - 1
        conv = nn.Conv2d(c, out_channels if last else hidden, k, padding=k // 2)
        if last:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        layers.append(conv)
        if not last:
            layers.append(nn.ReLU())
        c = hidden
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """One-sided affine coupling: y2 = x2 * exp(s(x1)) + t(x1), y1 = x1.

    Log-scales are soft-clamped, s = clamp * tanh(raw / clamp), which bounds exp(s) and keeps the
    inverse well conditioned while staying ~linear near zero.
    """

    def __init__(self, channels: int, hidden: int, kernel_sizes: list[int], clamp: float,
                 cond_channels: int = 0) -> None:
        super().__init__()
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        self.clamp = clamp
        self.net = subnet(self.c1 + cond_channels, 2 * self.c2, hidden, kernel_sizes)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None,
                rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.c1], x[:, self.c1:]
        h = x1 if cond is None else torch.cat([x1, cond], dim=1)
        raw = self.net(h)
        s = self.clamp * torch.tanh(raw[:, : self.c2] / self.clamp)
        t = raw[:, self.c2:]
        if rev:
            y2 = (x2 - t) * torch.exp(-s)
            return torch.cat([x1, y2], dim=1), -s.sum(dim=1)
        y2 = x2 * torch.exp(s) + t
        return torch.cat([x1, y2], dim=1), s.sum(dim=1)


def positional_encoding(n: int, channels: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """2D sinusoidal encoding [N, channels, h, w]: channels/4 frequencies of sin/cos for x and y.

    Conditioning the couplings on position lets the flow learn that sky and ground look different
    at different image heights (a camera on a robot sees the floor at the bottom)."""
    k = channels // 4
    freqs = torch.exp(torch.arange(k, dtype=like.dtype, device=like.device) * (-math.log(100.0) / max(k, 1)))
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) / h
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) / w
    ay = ys[None, :, None] * freqs[:, None, None] * math.pi * 8  # [k, h, 1]
    ax = xs[None, None, :] * freqs[:, None, None] * math.pi * 8  # [k, 1, w]
    enc = torch.cat([torch.sin(ay).expand(k, h, w), torch.cos(ay).expand(k, h, w),
                     torch.sin(ax).expand(k, h, w), torch.cos(ax).expand(k, h, w)], dim=0)
    return enc.unsqueeze(0).expand(n, -1, -1, -1)


class NormalizingFlow(nn.Module):
    """`steps` x (ActNorm -> Permutation -> AffineCoupling) on a feature map, per position."""

    def __init__(self, channels: int, steps: int, hidden: int, kernel_sizes: list[int],
                 clamp: float, positional_channels: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.positional_channels = positional_channels
        self.norms = nn.ModuleList(ActNorm(channels) for _ in range(steps))
        self.perms = nn.ModuleList(Permutation(channels, seed * 1000 + i) for i in range(steps))
        self.couplings = nn.ModuleList(
            AffineCoupling(channels, hidden, kernel_sizes, clamp, positional_channels)
            for _ in range(steps))

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        cond = (positional_encoding(n, self.positional_channels, h, w, x)
                if self.positional_channels else None)
        logdet = x.new_zeros(n, h, w)
        order = range(len(self.norms))
        for i in (reversed(order) if rev else order):
            if rev:
                x, ld3 = self.couplings[i](x, cond, rev=True)
                x, ld2 = self.perms[i](x, rev=True)
                x, ld1 = self.norms[i](x, rev=True)
            else:
                x, ld1 = self.norms[i](x)
                x, ld2 = self.perms[i](x)
                x, ld3 = self.couplings[i](x, cond)
            logdet = logdet + ld1 + ld2 + ld3
        return x, logdet
