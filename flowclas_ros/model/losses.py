"""FlowCLAS training losses: inlier maximum likelihood + supervised contrastive latent loss.

L = L_ml + lambda * L_con. L_ml is the mean per-dimension NLL over inlier feature cells only (a
mean, not the authors' sum, so lambda needs no 1e-6 rescaling). L_con is SupCon over sampled cell
embeddings: inliers are positives of each other, pasted anomalies are their negatives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID


def cell_labels(labels: torch.Tensor, stride: int) -> torch.Tensor:
    """Pixel labels [N,H,W] (0/1/255) -> feature-cell labels [N,H/s,W/s].

    A cell is ANOMALY when >= half of its pixels are anomalous, INLIER when it holds no anomalous
    pixel and less than half void, VOID otherwise (mixed border cells would teach the flow that
    half an obstacle is normal)."""
    lab = labels.long()
    frac_anom = F.avg_pool2d((lab == ANOMALY).float().unsqueeze(1), stride).squeeze(1)
    frac_void = F.avg_pool2d((lab == VOID).float().unsqueeze(1), stride).squeeze(1)
    out = torch.full_like(frac_anom, VOID, dtype=torch.uint8)
    out[(frac_anom == 0) & (frac_void < 0.5)] = INLIER
    out[frac_anom >= 0.5] = ANOMALY
    return out


def inlier_nll(nll: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Mean NLL per dimension over inlier cells (zero, still in the graph, if there are none)."""
    mask = cells == INLIER
    if not bool(mask.any()):
        return nll.sum() * 0.0
    return nll[mask].mean()


def supcon(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) on L2-normalised rows `emb` [M,D].

    For each anchor: -mean over its positives p of log softmax_{a != anchor}(emb . emb_a / T)[p]."""
    sim = emb @ emb.t() / temperature
    m = emb.shape[0]
    self_mask = torch.eye(m, dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[valid] / n_pos[valid])
    return per_anchor.mean()


def sample_cells(cells: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to n random flat indices of inlier cells and of anomaly cells."""
    flat = cells.reshape(-1).cpu()
    out = []
    for cls in (INLIER, ANOMALY):
        idx = torch.nonzero(flat == cls).squeeze(1)
        if idx.numel() > n:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:n]]
        out.append(idx)
    return out[0], out[1]


def negative_nll_hinge(nll: torch.Tensor, cells: torch.Tensor, first_negative: int,
                       margin: float) -> torch.Tensor:
    """Mean of relu(mean inlier NLL + margin - NLL) over the ANOMALY cells of frames
    `first_negative`.. (the appended flow-negative copies). The inlier mean is detached: the term
    lowers the density of the synthetic negatives, it does not raise the inliers' NLL."""
    neg = torch.zeros_like(cells, dtype=torch.bool)
    neg[first_negative:] = cells[first_negative:] == ANOMALY
    inl = cells == INLIER
    if not bool(neg.any()) or not bool(inl.any()):
        return nll.sum() * 0.0
    target = nll[inl].mean().detach() + margin
    return F.relu(target - nll[neg]).mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    ml: torch.Tensor
    con: torch.Tensor


def flowclas_loss(nll: torch.Tensor, emb: torch.Tensor, cells: torch.Tensor, weight: float,
                  temperature: float, samples_per_class: int, generator: torch.Generator) -> LossTerms:
    """nll [N,h,w], emb [N,D,h,w] (normalised), cells [N,h,w] -> L_ml + weight * L_con.

    The contrastive term needs both classes in the batch; without anomalies it is an exact zero
    that still touches `emb`, so DDP sees every parameter used on every step."""
    ml = inlier_nll(nll, cells)
    con = emb.sum() * 0.0
    if weight > 0:
        inl, anom = sample_cells(cells, samples_per_class, generator)
        if anom.numel() >= 2 and inl.numel() >= 2:
            flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
            idx = torch.cat([inl, anom]).to(emb.device)
            labels = torch.cat([torch.zeros_like(inl), torch.ones_like(anom)]).to(emb.device)
            con = supcon(flat[idx], labels, temperature)
    return LossTerms(total=ml + weight * con, ml=ml, con=con)
