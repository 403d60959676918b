"""Flow-sampled negatives (NFlowJS style outlier exposure): anomalies drawn from our own flow.

Why this exists: FlowCLAS needs anomaly examples for its contrastive loss, and some users have no
object set to paste. NFlowJS (Grcic et al.) trains a flow and samples synthetic negatives "along
the border of the inlier manifold". We do it with the FlowCLAS flow itself, in feature space.

What is sampled, exactly
------------------------
The head maps a feature map x [C,h,w] to latents z = f(x) and models each cell's z with a
diagonal Gaussian N(mu, diag(sigma^2)) shared by all cells. In standardised coordinates
u = (z - mu) / sigma an inlier cell is ~N(0, I_C), so its squared radius ||u||^2 / C concentrates
at 1 (chi-square with C degrees of freedom, relative spread sqrt(2 / C): 0.11 for C = 152).

1. A blob of ``cells`` INLIER cells of a real feature map is chosen (noise-shaped, compact).
2. Their latents are replaced by SHELL samples: u_neg = tau * sqrt(C) * d with tau ~ U(tau range)
   and a unit direction d = normalise((1 - anchor) * g / ||g|| + anchor * u_in / ||u_in||),
   g ~ N(0, I_C) (``anchor`` 0: a uniformly random direction; 1: the replaced inlier's own
   direction pushed radially outward). z_neg = mu + sigma * u_neg. Default: tau 1.2..1.6,
   anchor 1, i.e. ||u||^2 / C = 1.44..2.56, 4..14 chi-square spreads outside the inlier typical
   set for C = 152: NFlowJS's "border of the inlier manifold", each negative next to a real
   inlier. Farther, random shells (tau 1.5..3, anchor 0) were tried: after ~50 training steps
   their inverse left the backbone's feature range (cell norms up to 1e4x), destabilised the
   likelihood term, and the range guard below then dropped 65-90 % of them.
3. The WHOLE latent map (blob replaced, every other cell unchanged) is mapped back through the
   exact inverse flow, x_neg = f^-1(z_mod), without gradient. The couplings' subnets use 3x3
   convolutions, so a cell is not independent: inverting the whole map is what makes
   f(x_neg) = z_mod hold exactly (to float32 round-off) on every cell, blob and context alike,
   while splicing only the blob's features into the original map would not.
4. During training x_neg is a constant input that is forwarded again WITH gradient, and the blob
   cells are labelled ANOMALY for the contrastive loss. (Back-propagating through the inverse as
   well would be useless: f_theta(f_theta^-1(z)) = z for every theta, so that gradient is zero.)

Why the negatives lie off the inlier manifold
---------------------------------------------
By construction, under the CURRENT model: the flow's density of a feature x is
p(x) = N(f(x); mu, sigma) |det J_f(x)|, and the blob's latents sit on a shell of radius tau*sqrt(C)
in u-space, where the base log-density is lower than at a typical inlier by
0.5 * (tau^2 - ||u_in||^2 / C) nats per channel (~0.25 at tau = 1.2, ~0.6 at 1.5 when
||u_in||^2 / C ~ 0.95, as measured on a trained toy head). The inverse map sends
them to the feature-space region the flow assigns that low density: x_neg are features no backbone
frame produced, which the model itself declares unlikely. The log-Jacobian term can move the
per-dimension NLL either way (it is 0 at initialisation, where every coupling is the identity,
and bounded by the coupling clamp); the tests check on a trained head that negatives still have a
clearly higher NLL per dimension than the inlier cells they replace. What is NOT guaranteed: that
they resemble real anomalies. They are the model's own blind spots, pushed out so that the
contrastive term separates "unlikely under the current flow" from the inlier mode (NFlowJS's bet).

Measured limitation (docs/results.md, outlier-source ablation): as the only OE source they did not beat
NF-only, far behind pasted cut-outs. A likely reason: the contrastive
embedding is an L2-normalised projection of z, blind to a latent's radius (only the projection
bias sees it), while shell negatives differ from inliers mainly by radius; and since they are
re-sampled from the current flow every step, the flow can never "finish" separating them.

Context cells: their latents equal the original inlier latents, but their FEATURES changed (the
inverse propagates through 3x3 convs), so by default they are VOID in the negative copy
(``context="ignore"``): the maximum-likelihood term never trains on synthetic features. The
negative maps are extra frames appended to the batch (``append_negatives``); the original frame
stays in the batch, so no inlier data is lost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flowclas_ros.data.outliers.cutouts import as_pair
from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID

__all__ = [
    "CONTEXT_LABELS",
    "FlowNegativeConfig",
    "NegativeMaps",
    "append_negatives",
    "blob_cells",
    "invert",
    "negative_feature_maps",
    "shell_latents",
]

CONTEXT_LABELS: tuple[str, ...] = ("ignore", "inlier")


@dataclass(frozen=True)
class FlowNegativeConfig:
    """How flow negatives are drawn.

    ``probability``: chance that each frame of a batch spawns a negative copy (when no explicit
    frame list is given); ``cells``: inclusive range of the blob size in feature cells (capped by
    the frame's inlier cells); ``tau``: range of the shell radius in units of sqrt(C), i.e.
    ||u|| / sqrt(C) (must stay above 1, the inlier typical set); ``anchor``: 0 = random shell
    direction, 1 = the replaced inlier's own direction; ``context``: label of the negative copy's
    non-blob cells, ``ignore`` (default) or ``inlier`` (their original labels);
    ``max_norm_ratio``: a negative copy is dropped when any of its cells' feature L2 norm exceeds
    this multiple of the largest cell norm of the real source features (the inverse of a far
    shell through a flow with large coupling scales can leave the range any backbone produces,
    and such features give huge, useless gradients; see the module docstring).
    """

    probability: float = 0.5
    cells: tuple[int, int] = (4, 24)
    tau: tuple[float, float] = (1.2, 1.6)
    anchor: float = 1.0
    context: str = "ignore"
    max_norm_ratio: float = 1.5

    def __post_init__(self) -> None:
        if isinstance(self.probability, bool) or not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"FlowNegativeConfig.probability must be in [0, 1], got {self.probability!r}")
        cells = as_pair(self.cells, "FlowNegativeConfig.cells")
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in cells) \
                or not 1 <= cells[0] <= cells[1]:
            raise ValueError(f"FlowNegativeConfig.cells must be integers with 1 <= low <= high, got {self.cells!r}")
        tau = as_pair(self.tau, "FlowNegativeConfig.tau")
        if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in tau) or not 1.0 < tau[0] <= tau[1]:
            raise ValueError(f"FlowNegativeConfig.tau must satisfy 1 < low <= high (outside the inlier "
                             f"typical set ||u||^2/C ~ 1), got {self.tau!r}")
        if isinstance(self.anchor, bool) or not 0.0 <= self.anchor <= 1.0:
            raise ValueError(f"FlowNegativeConfig.anchor must be in [0, 1], got {self.anchor!r}")
        if isinstance(self.max_norm_ratio, bool) or not (isinstance(self.max_norm_ratio, (int, float))
                                                          and self.max_norm_ratio >= 1.0):
            raise ValueError(f"FlowNegativeConfig.max_norm_ratio must be a number >= 1, got {self.max_norm_ratio!r}")
        if self.context not in CONTEXT_LABELS:
            raise ValueError(f"FlowNegativeConfig.context must be one of {CONTEXT_LABELS}, got {self.context!r}")
        object.__setattr__(self, "cells", (int(cells[0]), int(cells[1])))
        object.__setattr__(self, "tau", (float(tau[0]), float(tau[1])))
        object.__setattr__(self, "anchor", float(self.anchor))
        object.__setattr__(self, "max_norm_ratio", float(self.max_norm_ratio))


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def shell_latents(n: int, channels: int, tau: tuple[float, float], generator: torch.Generator,
                  anchor_u: Optional[torch.Tensor] = None, anchor: float = 0.0) -> torch.Tensor:
    """n standardised latents u [n, C] on shells ||u|| = tau * sqrt(C), tau ~ U(tau), float32.

    Direction: normalise((1 - anchor) * g / ||g|| + anchor * a / ||a||), g ~ N(0, I_C), a the rows
    of ``anchor_u`` (required when anchor > 0). Exact radii: ||u||^2 / C == tau^2."""
    g = torch.randn(n, channels, generator=generator, dtype=torch.float64)
    direction = F.normalize(g, dim=1)
    if anchor > 0:
        if anchor_u is None or anchor_u.shape != (n, channels):
            raise ValueError(f"shell_latents: anchor > 0 needs anchor_u of shape {(n, channels)}")
        mixed = (1 - anchor) * direction + anchor * F.normalize(anchor_u.double(), dim=1)
        # antipodal cancellation (anchor 0.5, g == -a) is measure-zero; fall back to g then
        bad = mixed.norm(dim=1) < 1e-6
        direction = torch.where(bad[:, None], direction, F.normalize(mixed, dim=1))
    radius = _uniform(n, tau[0], tau[1], generator) * math.sqrt(channels)
    return (direction * radius[:, None]).float()


@torch.no_grad()
def invert(head, z: torch.Tensor) -> torch.Tensor:
    """Features x with f(x) = z: the exact inverse flow, no gradient."""
    x, _ = head.flow(z, rev=True)
    return x


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def blob_cells(allowed: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """A compact, noise-shaped blob of exactly min(k, #allowed) cells of the bool map ``allowed``
    [h, w]: a random allowed centre, cells ranked by fractal noise minus the squared distance to
    it (in units of the blob's radius), the top k allowed cells kept."""
    from flowclas_ros.data.outliers.procedural_anomalies import fractal_noise

    h, w = allowed.shape
    flat_allowed = allowed.reshape(-1).cpu()
    n_allowed = int(flat_allowed.sum())
    k = min(int(k), n_allowed)
    out = torch.zeros(h * w, dtype=torch.bool)
    if k <= 0:
        return out.reshape(h, w)
    idx = torch.nonzero(flat_allowed).squeeze(1)
    centre = int(idx[int(torch.randint(0, idx.numel(), (1,), generator=generator))])
    cy, cx = divmod(centre, w)
    noise = fractal_noise((h, w), _numpy_rng(generator), (2, 2), octaves=3)
    noise = torch.from_numpy(noise / max(float(noise.std()), 1e-6)).reshape(-1).double()
    ys = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w).reshape(-1)
    xs = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w).reshape(-1)
    radius2 = max(k / math.pi, 1.0)
    score = 0.5 * noise - ((ys - cy) ** 2 + (xs - cx) ** 2) / radius2
    score[~flat_allowed] = -math.inf
    score[centre] = math.inf  # the centre is always in
    out[torch.topk(score, k).indices] = True
    return out.reshape(h, w)


@dataclass
class NegativeMaps:
    """Negative copies of some frames of a batch.

    feats [M,C,h,w]: inverse-mapped features (detached); cells [M,h,w]: ANOMALY on the blob, the
    context label elsewhere; target_z [M,C,h,w]: the latents f(feats) must reproduce; blob
    [M,h,w] bool; source [M]: the batch index each copy came from; tau [K]: the shell radius of
    each blob cell (in blob order: frames, then row-major); dropped: how many chosen frames were
    discarded by the range guard (``FlowNegativeConfig.max_norm_ratio``)."""

    feats: torch.Tensor
    cells: torch.Tensor
    target_z: torch.Tensor
    blob: torch.Tensor
    source: torch.Tensor
    tau: torch.Tensor
    dropped: int = 0  # chosen frames whose inverse left the feature range (or was not finite)

    def __len__(self) -> int:
        return int(self.feats.shape[0])


def _check_initialised(head) -> None:
    norms = getattr(head.flow, "norms", [])
    if any(int(n.initialized) == 0 for n in norms):
        raise RuntimeError("flow negatives need an initialised flow: run one training-mode forward "
                           "pass on inlier features first (ActNorm data-dependent init)")


@torch.no_grad()
def negative_feature_maps(head, feats: torch.Tensor, cells: torch.Tensor, cfg: FlowNegativeConfig,
                          generator: torch.Generator,
                          frames: Optional[Sequence[int]] = None) -> NegativeMaps:
    """Negative feature maps from a batch: for each chosen frame, a blob of its INLIER cells gets
    shell latents, the whole map goes through the inverse flow (see the module docstring).

    ``feats`` [N,C,h,w] backbone features, ``cells`` [N,h,w] cell labels. ``frames``: batch
    indices to copy (None: each frame with ``cfg.probability``). Frames without an inlier cell
    are skipped; so is a copy whose inverse is not finite or leaves the feature range (any cell
    norm above ``cfg.max_norm_ratio`` x the largest real cell norm of the chosen frames), which
    is then absent from the result and counted in ``dropped``."""
    _check_initialised(head)
    n, c, h, w = feats.shape
    if frames is None:
        chosen = torch.nonzero(torch.rand(n, generator=generator) < cfg.probability).squeeze(1).tolist()
    else:
        chosen = [int(i) for i in frames]
    inl = (cells == INLIER).cpu()
    chosen = [i for i in chosen if bool(inl[i].any())]
    device = feats.device
    empty = NegativeMaps(feats.new_zeros(0, c, h, w), cells.new_zeros(0, h, w), feats.new_zeros(0, c, h, w),
                         torch.zeros(0, h, w, dtype=torch.bool, device=device),
                         torch.zeros(0, dtype=torch.long), torch.zeros(0))
    if not chosen:
        return empty
    src = feats[chosen]
    z, _ = head.flow(src)
    mu, sigma = head.mu.detach(), torch.exp(head.log_sigma.detach())
    blobs, taus = [], []
    z_mod = z.clone()
    for j, i in enumerate(chosen):
        k = int(torch.randint(cfg.cells[0], cfg.cells[1] + 1, (1,), generator=generator))
        blob = blob_cells(inl[i], k, generator).to(device)
        z_cells = z_mod[j][:, blob].t()  # [K, C]
        u_in = (z_cells - mu[0, :, 0, 0]) / sigma[0, :, 0, 0]
        u_neg = shell_latents(int(blob.sum()), c, cfg.tau, generator, u_in.cpu(), cfg.anchor).to(device)
        z_mod[j][:, blob] = (mu[0, :, 0, 0] + sigma[0, :, 0, 0] * u_neg).t()
        taus.append(u_neg.norm(dim=1).cpu() / math.sqrt(c))
        blobs.append(blob)
    x_neg = invert(head, z_mod)
    limit = cfg.max_norm_ratio * src.norm(dim=1).max()
    ok = (torch.isfinite(x_neg).flatten(1).all(dim=1)
          & (torch.nan_to_num(x_neg, nan=math.inf).norm(dim=1).flatten(1).max(dim=1).values <= limit)).cpu()
    keep = [j for j in range(len(chosen)) if bool(ok[j])]
    if not keep:
        empty.dropped = len(chosen)
        return empty
    blob_t = torch.stack([blobs[j] for j in keep])
    if cfg.context == "inlier":
        neg_cells = cells[[chosen[j] for j in keep]].clone()
    else:
        neg_cells = torch.full((len(keep), h, w), VOID, dtype=cells.dtype, device=cells.device)
    neg_cells[blob_t.to(cells.device)] = ANOMALY
    return NegativeMaps(feats=x_neg[keep].contiguous(), cells=neg_cells, target_z=z_mod[keep],
                        blob=blob_t, source=torch.tensor([chosen[j] for j in keep], dtype=torch.long),
                        tau=torch.cat([taus[j] for j in keep]), dropped=len(chosen) - len(keep))


def append_negatives(feats: torch.Tensor, cells: torch.Tensor,
                     neg: NegativeMaps) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with the negative copies appended: (feats [N+M,...], cells [N+M,...])."""
    if len(neg) == 0:
        return feats, cells
    return torch.cat([feats, neg.feats.to(feats.dtype)]), torch.cat([cells, neg.cells.to(cells.dtype)])
