"""Tests for the FlowCLAS losses (flowclas_ros.model.losses), ending with a small end-to-end
training run on the real frozen EfficientNet-Lite0 backbone and toy frames with pasted outliers."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from flowclas_ros.config import BackboneConfig, FlowConfig, ModelConfig
from flowclas_ros.data.outliers.cutouts import CutoutBank, PasteConfig, paste_cutout, paste_outliers
from flowclas_ros.model.flowclas import FlowCLAS, FlowHead
from flowclas_ros.model.losses import cell_labels, flowclas_loss, inlier_nll, sample_cells, supcon
from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID
from flowclas_ros.runtime.processing import label_to_input, preprocess
from flowclas_ros.sim.toy import make_cutout, render_inlier_scene

# ------------------------------------------------------------------ cell_labels


def test_cell_labels_hand_built() -> None:
    # 2x2 cells over a 4x8 map, stride 2: one hand-built case per cell.
    A, V = ANOMALY, VOID
    lab = torch.tensor([
        # c0: pure  c1: 2/4 an  c2: 1/4 an  c3: 2/4 void
        [0, 0,      A, 0,       A, 0,       V, 0],
        [0, 0,      A, 0,       0, 0,       V, 0],
        # c4: 1/4 void  c5: all an  c6: 2 an + 2 void  c7: 1 an + 3 void
        [V, 0,          A, A,      A, V,               A, V],
        [0, 0,          A, A,      A, V,               V, V],
    ], dtype=torch.uint8)[None]
    cells = cell_labels(lab, 2)
    assert cells.dtype == torch.uint8
    assert cells.shape == (1, 2, 4)
    expected = torch.tensor([[
        [INLIER, ANOMALY, VOID, VOID],   # pure inlier; half anomaly; mixed; half void
        [INLIER, ANOMALY, ANOMALY, VOID],  # <half void; all anomaly; half anomaly (rest void); mixed
    ]], dtype=torch.uint8)
    torch.testing.assert_close(cells, expected, atol=0, rtol=0)


def test_cell_labels_stride8_batch() -> None:
    lab = torch.zeros(2, 16, 24, dtype=torch.uint8)
    lab[0, :8, :8] = ANOMALY           # cell (0,0): anomaly
    lab[0, 8:, 8:13] = ANOMALY         # cell (1,1): 40/64 anomaly -> ANOMALY
    lab[0, 8:, 16:19] = ANOMALY        # cell (1,2): 24/64 anomaly -> VOID
    lab[1, :, 16:] = VOID            # whole void column of cells
    lab[1, 0, 0] = ANOMALY             # one anomalous pixel spoils an inlier cell
    cells = cell_labels(lab, 8)
    assert cells.shape == (2, 2, 3)
    torch.testing.assert_close(cells[0], torch.tensor([[1, 0, 0], [0, 1, 255]], dtype=torch.uint8))
    torch.testing.assert_close(cells[1], torch.tensor([[255, 0, 255], [0, 0, 255]], dtype=torch.uint8))


def test_inlier_nll_masks_cells() -> None:
    nll = torch.tensor([[[1.0, 2.0], [3.0, 100.0]]], requires_grad=True)
    cells = torch.tensor([[[INLIER, INLIER], [INLIER, ANOMALY]]], dtype=torch.uint8)
    loss = inlier_nll(nll, cells)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    torch.testing.assert_close(nll.grad, torch.tensor([[[1 / 3, 1 / 3], [1 / 3, 0.0]]]))
    # No inlier at all: zero, still differentiable.
    nll2 = torch.ones(1, 2, 2, requires_grad=True)
    zero = inlier_nll(nll2, torch.full((1, 2, 2), VOID, dtype=torch.uint8))
    assert zero.item() == 0.0
    zero.backward()
    assert nll2.grad is not None and torch.count_nonzero(nll2.grad) == 0


# ------------------------------------------------------------------ supcon


def supcon_reference(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Straightforward per-anchor SupCon (Khosla et al., L_out), written with Python loops."""
    m = emb.shape[0]
    losses = []
    for i in range(m):
        others = [a for a in range(m) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = torch.logsumexp(torch.stack([emb[i] @ emb[a] / temperature for a in others]), dim=0)
        terms = [emb[i] @ emb[p] / temperature - denom for p in positives]
        losses.append(-torch.stack(terms).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed,temperature", [(0, 0.1), (1, 0.5), (2, 1.0)])
def test_supcon_matches_loop_reference(seed: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(23, 6, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 2, (23,), generator=g)
    labels[0], labels[1], labels[2] = 0, 1, 1
    got = supcon(emb, labels, temperature)
    want = supcon_reference(emb, labels, temperature)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # float32 too (the dtype training uses)
    torch.testing.assert_close(supcon(emb.float(), labels, temperature), want.float(), atol=1e-5, rtol=1e-5)


def test_supcon_skips_anchors_without_positives() -> None:
    g = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1])  # the single anomaly has no positive
    got = supcon(emb, labels, 0.2)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, supcon_reference(emb, labels, 0.2), atol=1e-10, rtol=0)


def test_supcon_separated_lower_than_shuffled_and_has_gradient() -> None:
    g = torch.Generator().manual_seed(4)
    # Two tight clusters around orthogonal directions.
    centres = torch.eye(8)[:2]
    labels = torch.tensor([0] * 10 + [1] * 10)
    emb = F.normalize(centres[labels] + 0.05 * torch.randn(20, 8, generator=g), dim=1)
    emb.requires_grad_(True)
    separated = supcon(emb, labels, 0.1)
    shuffled_labels = labels[torch.randperm(20, generator=g)]
    assert not torch.equal(shuffled_labels, labels)
    shuffled = supcon(emb, shuffled_labels, 0.1)
    assert separated.item() < shuffled.item() - 1.0
    # Near the optimum: only the within-class spread (log 9 positives) remains.
    assert separated.item() < np.log(9) + 0.1

    separated.backward()
    assert emb.grad is not None
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0

    # One gradient step on the shuffled (mislabelled) problem lowers it: the loss is trainable.
    x = emb.detach().clone().requires_grad_(True)
    before = supcon(F.normalize(x, dim=1), shuffled_labels, 0.1)
    before.backward()
    with torch.no_grad():
        x -= 0.05 * x.grad
    after = supcon(F.normalize(x, dim=1), shuffled_labels, 0.1)
    assert after.item() < before.item()


# ------------------------------------------------------------------ flowclas_loss


def _random_batch(seed: int, with_anomaly: bool = True):
    g = torch.Generator().manual_seed(seed)
    nll = torch.randn(2, 6, 7, generator=g).requires_grad_(True)
    emb = F.normalize(torch.randn(2, 5, 6, 7, generator=g), dim=1).requires_grad_(True)
    cells = torch.zeros(2, 6, 7, dtype=torch.uint8)
    cells[:, 0] = VOID
    if with_anomaly:
        cells[0, 2:4, 2:5] = ANOMALY
        cells[1, 5, :] = ANOMALY
    return nll, emb, cells


def test_flowclas_loss_weight_zero_is_inlier_nll() -> None:
    nll, emb, cells = _random_batch(0)
    terms = flowclas_loss(nll, emb, cells, 0.0, 0.1, 16, torch.Generator().manual_seed(0))
    assert torch.equal(terms.total, inlier_nll(nll, cells))
    assert torch.equal(terms.ml, terms.total)
    assert terms.con.item() == 0.0


def test_flowclas_loss_weight_combines_terms() -> None:
    nll, emb, cells = _random_batch(1)
    terms = flowclas_loss(nll, emb, cells, 0.7, 0.1, 1000, torch.Generator().manual_seed(0))
    assert terms.con.item() > 0
    torch.testing.assert_close(terms.total, terms.ml + 0.7 * terms.con)
    # With samples_per_class above every class's count, every labelled cell is used: the
    # contrastive term equals SupCon over all inlier + anomaly cells (order does not matter).
    flat = emb.permute(0, 2, 3, 1).reshape(-1, 5)
    c = cells.reshape(-1)
    keep = (c == INLIER) | (c == ANOMALY)
    torch.testing.assert_close(terms.con, supcon(flat[keep], c[keep].long(), 0.1))
    terms.total.backward()
    assert emb.grad.abs().sum() > 0 and nll.grad.abs().sum() > 0
    assert torch.count_nonzero(nll.grad[cells != INLIER]) == 0  # NLL only on inlier cells


def test_flowclas_loss_without_anomalies_has_zero_contrastive_term_with_grad_path() -> None:
    nll, emb, cells = _random_batch(2, with_anomaly=False)
    terms = flowclas_loss(nll, emb, cells, 1.0, 0.1, 16, torch.Generator().manual_seed(0))
    assert terms.con.item() == 0.0
    assert terms.con.requires_grad  # in the graph (DDP sees every parameter used)
    torch.testing.assert_close(terms.total, inlier_nll(nll, cells), atol=0, rtol=0)
    terms.total.backward()
    assert emb.grad is not None
    assert torch.count_nonzero(emb.grad) == 0


def test_sample_cells_caps_and_is_seeded() -> None:
    cells = torch.zeros(1, 10, 10, dtype=torch.uint8)
    cells[0, :3] = ANOMALY          # 30 anomaly cells
    cells[0, 9] = VOID            # 10 ignore, 60 inlier
    inl, anom = sample_cells(cells, 20, torch.Generator().manual_seed(5))
    assert inl.numel() == 20 and anom.numel() == 20
    flat = cells.reshape(-1)
    assert (flat[inl] == INLIER).all() and (flat[anom] == ANOMALY).all()
    assert inl.unique().numel() == 20
    inl2, anom2 = sample_cells(cells, 20, torch.Generator().manual_seed(5))
    assert torch.equal(inl, inl2) and torch.equal(anom, anom2)
    inl3, anom3 = sample_cells(cells, 100, torch.Generator().manual_seed(5))
    assert inl3.numel() == 60 and anom3.numel() == 30


# ------------------------------------------------------------------ end to end on the real backbone

INPUT_HW = (128, 160)
STRIDE = 8
STEPS = 30


def _toy_batch(rng: np.random.Generator, model: FlowCLAS, bank: CutoutBank, n: int):
    """n toy frames with 2-3 pasted "oe" cut-outs each -> (normalised images, pixel labels)."""
    cfg = PasteConfig(probability=1.0, count=(2, 3), scale=(0.2, 0.4))
    images, labels = [], []
    for _ in range(n):
        frame = render_inlier_scene(rng, (120, 160))  # 4:3 like the model input; stretched
        frame, label, pasted = paste_outliers(frame, None, bank, cfg, rng)
        assert pasted
        x, geom = preprocess(frame, INPUT_HW, model.backbone.mean, model.backbone.std, "stretch")
        images.append(x)
        labels.append(label_to_input(label, geom))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def _aurocs(head: FlowHead, feats: torch.Tensor, cells: torch.Tensor) -> tuple[float, float]:
    """(AUROC of the anomaly score, AUROC of 1 - cos(embedding, inlier mean)), anomaly vs inlier cells."""
    with torch.no_grad():
        z, logdet = head(feats)
        score = head.raw_score(z, logdet)
        emb = head.embed(z).permute(0, 2, 3, 1)
    keep = (cells == INLIER) | (cells == ANOMALY)
    y = (cells[keep] == ANOMALY).numpy()
    e = emb[keep]
    centre = F.normalize(e[torch.from_numpy(~y)].mean(dim=0), dim=0)
    return roc_auc_score(y, score[keep].numpy()), roc_auc_score(y, -(e @ centre).numpy())


def _train(head: FlowHead, feats: torch.Tensor, cells: torch.Tensor, weight: float) -> list[float]:
    torch.manual_seed(1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    head.train()
    con = []
    for _ in range(STEPS):
        z, logdet = head(feats)
        terms = flowclas_loss(head.nll_per_dim(z, logdet), head.embed(z), cells, weight,
                              temperature=0.1, samples_per_class=256, generator=gen)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        assert torch.isfinite(terms.total)
        con.append(terms.con.item())
    head.eval()
    return con


def test_contrastive_term_separates_pasted_anomalies_on_toy_batch() -> None:
    """The issue's acceptance test: "the contrastive term separates pasted anomalies from inliers
    on a toy batch after a few steps"."""
    torch.manual_seed(0)
    model = FlowCLAS(ModelConfig(input_size=list(INPUT_HW),
                                 backbone=BackboneConfig(taps=[8, 16], feature_stride=STRIDE),
                                 flow=FlowConfig(steps=2, hidden_channels=32), projection_channels=16))
    rng = np.random.default_rng(0)
    train_bank = CutoutBank([make_cutout(rng, "oe") for _ in range(12)])
    images, labels = _toy_batch(rng, model, train_bank, 8)
    # Held-out frames: new scenes AND new cut-outs of the same "oe" family.
    test_bank = CutoutBank([make_cutout(rng, "oe") for _ in range(12)])
    test_images, test_labels = _toy_batch(rng, model, test_bank, 8)

    assert set(np.unique(labels.numpy())) <= {0, 1}
    feats = model.features(images)           # frozen backbone: computed once
    test_feats = model.features(test_images)
    assert feats.shape == (8, 152, 16, 20) and not feats.requires_grad
    cells = cell_labels(labels, STRIDE)
    test_cells = cell_labels(test_labels, STRIDE)
    n_anom, n_inl = int((cells == ANOMALY).sum()), int((cells == INLIER).sum())
    assert n_anom >= 50 and n_inl >= 1000, (n_anom, n_inl)

    # ActNorm data-dependent init, then keep that exact start for both runs.
    model.head.train()
    with torch.no_grad():
        model.head(feats)
    assert all(int(n.initialized) == 1 for n in model.head.flow.norms)
    start = copy.deepcopy(model.head.state_dict())
    init_score_auc, init_emb_auc = _aurocs(model.head, feats, cells)

    # FlowCLAS: L_ml + lambda * L_con
    con = _train(model.head, feats, cells, weight=1.0)
    clas_in = _aurocs(model.head, feats, cells)
    clas_out = _aurocs(model.head, test_feats, test_cells)

    # NF-only ablation (lambda = 0): same start, seed, steps and data.
    nf_head = copy.deepcopy(model.head)
    nf_head.load_state_dict(start)
    con0 = _train(nf_head, feats, cells, weight=0.0)
    assert all(c == 0.0 for c in con0)
    nf_in = _aurocs(nf_head, feats, cells)
    nf_out = _aurocs(nf_head, test_feats, test_cells)
    report = dict(con=(con[0], con[-1]), init=(init_score_auc, init_emb_auc), clas_in=clas_in,
                  clas_out=clas_out, nf_in=nf_in, nf_out=nf_out)

    # (a) the contrastive loss drops substantially (its floor is > 0: ~log(#positives)).
    assert con[-1] < 0.75 * con[0], report
    # (b) the anomaly score separates anomaly from inlier cells, on the training frames and on
    # held-out frames with unseen cut-outs.
    assert clas_in[0] > 0.9 and clas_out[0] > 0.9, report
    # Better than NF-only. On the *held-in* frames the raw-score comparison is a coin flip (both
    # reach ~0.98-0.99 AUROC; the NF memorises these inlier cells), so it is made where it is
    # reliable, in two ways:
    #  - on held-out frames the contrastive run's score AUROC beats NF-only by 0.05-0.11 across 8
    #    data seeds (NF-only ~0.87-0.92); asserted with a 0.02 margin;
    #  - in the contrastive embedding space (1 - cosine to the inlier mean), where FlowCLAS
    #    separates almost perfectly (>0.99) and NF-only (whose projection gets no gradient) does
    #    not (~0.6-0.9), and which must improve on the untrained start.
    assert clas_out[0] > nf_out[0] + 0.02, report
    assert clas_in[1] > 0.99 and clas_out[1] > 0.97, report
    assert clas_in[1] > nf_in[1] + 0.05 and clas_in[1] > init_emb_auc + 0.05, report
    # The contrastive term must not wreck the density score on the training frames.
    assert clas_in[0] > nf_in[0] - 0.03, report


def test_paste_cutout_labels_match_pixels() -> None:
    """The toy pipeline's labels mark exactly the pasted pixels (the contrastive test relies on it)."""
    rng = np.random.default_rng(3)
    frame = render_inlier_scene(rng, (120, 160))
    label = np.zeros(frame.shape[:2], np.uint8)
    cut = make_cutout(rng, "oe")
    before = frame.copy()
    paste_cutout(frame, label, cut, (40, 50))
    h, w = cut.mask.shape
    assert (label[40:40 + h, 50:50 + w] == ANOMALY).sum() == cut.mask.sum()
    assert label.sum() == cut.mask.sum() * ANOMALY
    np.testing.assert_array_equal(frame[label == 0], before[label == 0])
    np.testing.assert_array_equal(frame[40:40 + h, 50:50 + w][cut.mask], cut.rgb[cut.mask])


def test_negative_nll_hinge_only_on_the_appended_negative_cells() -> None:
    from flowclas_ros.model.losses import negative_nll_hinge

    nll = torch.tensor([[[1.0, 1.0], [1.0, 9.0]],     # frame 0: real; its ANOMALY cell is ignored
                        [[3.0, 1.0], [1.0, 1.5]]], requires_grad=True)  # frame 1: negative copy
    cells = torch.tensor([[[INLIER, INLIER], [INLIER, ANOMALY]],
                          [[INLIER, VOID], [ANOMALY, ANOMALY]]], dtype=torch.uint8)
    loss = negative_nll_hinge(nll, cells, first_negative=1, margin=1.0)
    inlier_mean = (1 + 1 + 1 + 3) / 4  # 1.5
    want = (max(0.0, inlier_mean + 1 - 1.0) + max(0.0, inlier_mean + 1 - 1.5)) / 2
    assert loss.item() == pytest.approx(want)
    loss.backward()
    # gradient only on the negative copy's anomaly cells (the inlier mean is detached)
    assert nll.grad[0].abs().sum() == 0 and nll.grad[1, 0].abs().sum() == 0
    assert (nll.grad[1, 1] < 0).all()
    # no negatives: an exact zero that stays in the graph
    zero = negative_nll_hinge(nll, cells, first_negative=2, margin=1.0)
    assert zero.item() == 0.0 and zero.requires_grad
