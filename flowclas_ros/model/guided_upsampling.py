"""Edge-aware upsampling of the coarse score map, guided by the input image.

Why: the flow scores a stride-8 feature grid, so plain bilinear upsampling smears every obstacle
over a ring of 8-16 input pixels; on the benchmark almost all high-scoring false positives lie
within 8 px of an obstacle's outline. A colour guided filter (He, Sun & Tang, "Guided Image
Filtering", TPAMI 2013), in its "fast" form (coefficients fitted on the coarse grid, applied at
full resolution), fits the score in each window as a linear function of the RGB guide, so the
upsampled score follows the image's own edges. It learns nothing: it is post-processing, editable
on a trained model with `flowclas-ros calibrate`.

Only box filters (AveragePool), elementwise ops and a closed-form 3x3 inverse: it exports to ONNX
and runs the same under ONNX Runtime, TensorRT and torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, windows clipped at the border (no zero padding bias)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def _solve_3x3_sym(a11, a12, a13, a22, a23, a33, b1, b2, b3):
    """Per-pixel solution of a symmetric positive-definite 3x3 system by cofactors."""
    c11 = a22 * a33 - a23 * a23
    c12 = a13 * a23 - a12 * a33
    c13 = a12 * a23 - a13 * a22
    c22 = a11 * a33 - a13 * a13
    c23 = a12 * a13 - a11 * a23
    c33 = a11 * a22 - a12 * a12
    det = a11 * c11 + a12 * c12 + a13 * c13
    x1 = (c11 * b1 + c12 * b2 + c13 * b3) / det
    x2 = (c12 * b1 + c22 * b2 + c23 * b3) / det
    x3 = (c13 * b1 + c23 * b2 + c33 * b3) / det
    return torch.cat([x1, x2, x3], 1)


def guided_upsample(score: torch.Tensor, guide: torch.Tensor, factor: int, radius: int,
                    eps: float) -> torch.Tensor:
    """Upsample `score` [N,1,h,w] by the integer `factor` to the guide's size [N,3,H,W].

    `factor` is a Python int (the feature stride), not read from tensor shapes, so the ONNX trace
    holds constants.

    The guide is average-pooled to the score grid; per window of (2*radius+1)^2 cells the score is
    fitted as a.guide + b (ridge `eps` on a, in squared guide units); a and b are box-averaged,
    bilinearly upsampled and applied to the full-resolution guide. eps small: edges snap to the
    image; eps large: a = 0, i.e. the box-smoothed score, bilinearly upsampled."""
    g = F.avg_pool2d(guide, factor)
    # Centre the guide per image: the covariances below are differences of means, and centring
    # keeps their float32 cancellation error far below eps.
    g_centre = g.mean(dim=(2, 3), keepdim=True)
    g = g - g_centre
    mean_g = box_mean(g, radius)
    mean_s = box_mean(score, radius)
    cov_gs = box_mean(g * score, radius) - mean_g * mean_s
    r, gr, b = g[:, 0:1], g[:, 1:2], g[:, 2:3]
    mr, mg, mb = mean_g[:, 0:1], mean_g[:, 1:2], mean_g[:, 2:3]

    def var(x, y, mx, my, ridge):
        return box_mean(x * y, radius) - mx * my + ridge

    a = _solve_3x3_sym(var(r, r, mr, mr, eps), var(r, gr, mr, mg, 0.0), var(r, b, mr, mb, 0.0),
                       var(gr, gr, mg, mg, eps), var(gr, b, mg, mb, 0.0), var(b, b, mb, mb, eps),
                       cov_gs[:, 0:1], cov_gs[:, 1:2], cov_gs[:, 2:3])
    offset = mean_s - (a * mean_g).sum(1, keepdim=True)
    a = F.interpolate(box_mean(a, radius), scale_factor=factor, mode="bilinear",
                      align_corners=False)
    offset = F.interpolate(box_mean(offset, radius), scale_factor=factor, mode="bilinear",
                           align_corners=False)
    return (a * (guide - g_centre)).sum(1, keepdim=True) + offset
