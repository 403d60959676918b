"""The anomaly score: what a pixel's number means, from the flow's latent to the calibrated map.

One place for the whole definition, because training (the likelihood loss), calibration, the
exported graph and the model card must agree on it:

1. per feature cell, with u = (z - mu) / sigma under the learned diagonal Gaussian base density:
   the mean over channels of 0.5 u^2 + log sigma (the authors' l without the log-Jacobian and the
   2 pi constant), or, with `score_includes_logdet`, the full negative log-likelihood per dimension;
2. normalised: (raw - offset) / scale, where calibration sets offset = the median inlier-pixel
   score and scale = its (1 - inlier_fpr) quantile minus the median, so 0 is a typical inlier
   pixel and 1.0 (the threshold) is exceeded by `inlier_fpr` of the calibration inlier pixels;
3. optionally Gaussian-smoothed on the feature grid, then upsampled to the input resolution,
   image-guided (colour guided filter) or bilinearly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)
MIN_SCALE = 1e-6  # a degenerate calibration (all inlier scores equal) must not divide by zero


def standardised(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """u = (z - mu) / sigma under the base density."""
    return (z - mu) * torch.exp(-log_sigma)


def nll_per_dim(z: torch.Tensor, logdet: torch.Tensor, mu: torch.Tensor,
                log_sigma: torch.Tensor) -> torch.Tensor:
    """Exact negative log-likelihood of the features per position, divided by channels [N,h,w]:
    the quantity the likelihood loss minimises."""
    u = standardised(z, mu, log_sigma)
    log_pz = (-0.5 * u * u - log_sigma - 0.5 * LOG_2PI).sum(dim=1)
    return -(log_pz + logdet) / z.shape[1]


def raw_score(z: torch.Tensor, logdet: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
              include_logdet: bool) -> torch.Tensor:
    """Step 1 of the module docstring: the un-normalised anomaly score per position [N,h,w]."""
    if include_logdet:
        return nll_per_dim(z, logdet, mu, log_sigma)
    u = standardised(z, mu, log_sigma)
    return (0.5 * u * u + log_sigma).mean(dim=1)


def normalisation_from_inliers(inlier_scores: np.ndarray, inlier_fpr: float) -> tuple[float, float]:
    """Step 2: (offset, scale) from un-normalised scores of calibration inlier pixels."""
    median, high = np.quantile(inlier_scores, [0.5, 1.0 - inlier_fpr])
    return float(median), max(float(high - median), MIN_SCALE)


def describe_score(m: Any) -> str:
    """Steps 1 and 3 in words for a `ModelConfig` (the model card's post-processing line)."""
    score = "full NLL per dimension (with log-Jacobian)" if m.score_includes_logdet \
        else "0.5 u^2 + log sigma per dimension (no log-Jacobian)"
    blur = f"Gaussian smoothing {m.score_blur_sigma:g} cells" if m.score_blur_sigma > 0 \
        else "no smoothing"
    up = (f"image-guided upsampling (colour guided filter, radius {m.score_guided_radius} cells, "
          f"eps {m.score_guided_eps:g})" if m.score_guided_radius > 0 else "bilinear upsampling")
    return f"{score}; {blur}; {up}"
