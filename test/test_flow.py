"""Tests for the hand-written normalizing-flow blocks (flowclas_ros.model.flow), on real tensors.

The subnets' last convs are zero-initialised (every coupling starts as the identity), so each
invertibility / log-det test first randomises all weights: an identity coupling would pass any
inverse or Jacobian check trivially.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from flowclas_ros.model.flow import (
    ActNorm,
    AffineCoupling,
    NormalizingFlow,
    Permutation,
    positional_encoding,
    subnet,
)


def randomize_(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Give every parameter (conv weights/biases, ActNorm loc/log_scale, mu...) random non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
    return module


def init_actnorms_(flow: NormalizingFlow, x: torch.Tensor) -> None:
    """Run the data-dependent ActNorm init (one train-mode forward), then switch to eval."""
    flow.train()
    with torch.no_grad():
        flow(x)
    flow.eval()
    for norm in flow.norms:
        assert int(norm.initialized) == 1


def assert_roundtrip(block: nn.Module, x: torch.Tensor, atol: float, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        y, ld_fwd = block(x, **kw)
        x_rec, ld_inv = block(y, rev=True, **kw)
    assert y.shape == x.shape
    assert ld_fwd.shape == (x.shape[0], x.shape[2], x.shape[3])
    assert not torch.allclose(y, x), "block acted as the identity; the test would be vacuous"
    torch.testing.assert_close(x_rec, x, atol=atol, rtol=0)
    torch.testing.assert_close(ld_fwd, -ld_inv, atol=atol, rtol=0)
    return y, ld_fwd


def composed_permutation(flow: NormalizingFlow) -> torch.Tensor:
    idx = torch.arange(flow.perms[0].perm.numel())
    for p in flow.perms:
        idx = idx[p.perm]
    return idx


# ------------------------------------------------------------------ invertibility, per block


def test_actnorm_roundtrip_after_init() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64) * 3 + 2
    norm = ActNorm(6).double().train()
    with torch.no_grad():
        norm(x)  # data-dependent init
    norm.eval()
    y, ld = assert_roundtrip(norm, x * 1.7 - 0.3, atol=1e-10)
    # logdet is the same at every position: sum of the per-channel log-scales.
    torch.testing.assert_close(ld, norm.log_scale.sum().expand_as(ld))


def test_permutation_roundtrip_and_zero_logdet() -> None:
    x = torch.randn(2, 9, 4, 5, dtype=torch.float64)
    perm = Permutation(9, seed=3)
    assert sorted(perm.perm.tolist()) == list(range(9))
    assert perm.perm.tolist() != list(range(9))
    y, ld = assert_roundtrip(perm, x, atol=0.0)
    assert torch.count_nonzero(ld) == 0
    torch.testing.assert_close(y, x[:, perm.perm])


@pytest.mark.parametrize("cond_channels", [0, 8])
@pytest.mark.parametrize("kernel_sizes", [[3, 1, 3], [1]])
def test_coupling_roundtrip(cond_channels: int, kernel_sizes: list[int]) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)  # odd channel count: c1=3, c2=4
    block = randomize_(AffineCoupling(7, 16, kernel_sizes, clamp=2.0, cond_channels=cond_channels).double(), 11)
    cond = positional_encoding(2, cond_channels, 5, 6, x) if cond_channels else None
    y, ld = assert_roundtrip(block, x, atol=1e-10, cond=cond)
    # One-sided coupling: the first half passes through unchanged.
    torch.testing.assert_close(y[:, :3], x[:, :3], atol=0, rtol=0)
    assert ld.abs().max() > 1e-3  # a real, non-trivial scale was applied


def test_coupling_uses_condition() -> None:
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    block = randomize_(AffineCoupling(4, 8, [1], clamp=2.0, cond_channels=4).double(), 5)
    cond = positional_encoding(1, 4, 3, 3, x)
    with torch.no_grad():
        y1, _ = block(x, cond=cond)
        y2, _ = block(x, cond=torch.zeros_like(cond))
    assert not torch.allclose(y1, y2)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_flow_roundtrip(dtype: torch.dtype, atol: float) -> None:
    torch.manual_seed(2)
    flow = NormalizingFlow(12, steps=4, hidden=16, kernel_sizes=[3, 1, 3], clamp=2.0,
                           positional_channels=8, seed=4).to(dtype)
    x = (torch.randn(3, 12, 6, 8) * 2 + 1).to(dtype)
    init_actnorms_(flow, x)
    # std 0.1 keeps the random flow well conditioned (|y| ~ 30); with std 0.2 outputs reach ~1e4
    # and float32 round-off alone exceeds 1e-4 -- a property of the random weights, not a bug.
    randomize_(flow, 21, std=0.1)
    y, ld = assert_roundtrip(flow, x, atol=atol)
    assert ld.abs().max() > 1.0  # the random flow really scales
    assert y.dtype == dtype and ld.dtype == dtype
    assert torch.isfinite(ld).all()


# ------------------------------------------------------------------ log-det vs brute-force Jacobian


def brute_force_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    shape = x.shape

    def flat_fn(v: torch.Tensor) -> torch.Tensor:
        return fn(v.reshape(shape))[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(flat_fn, x.reshape(-1))
    assert jac.shape == (x.numel(), x.numel())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabsdet


def test_coupling_logdet_matches_jacobian() -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    block = randomize_(AffineCoupling(4, 6, [3, 1, 3], clamp=2.0).double(), 7, std=0.5)
    with torch.no_grad():
        _, ld = block(x)
    expected = brute_force_logdet(lambda v: block(v), x)
    # The 3x3 convs mix neighbouring positions, but only into t/s of the *other* half: the full
    # Jacobian is block-triangular, so its log-det is the sum of the per-position log-dets.
    assert abs(float(expected)) > 1e-2
    torch.testing.assert_close(ld.sum(), expected, atol=1e-9, rtol=1e-9)


def test_flow_logdet_matches_jacobian_with_positional_conditioning() -> None:
    torch.manual_seed(4)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    flow = NormalizingFlow(4, steps=3, hidden=6, kernel_sizes=[3, 1, 3], clamp=2.0,
                           positional_channels=4, seed=1).double()
    init_actnorms_(flow, torch.randn(2, 4, 2, 3, dtype=torch.float64) * 2)
    randomize_(flow, 8, std=0.5)
    with torch.no_grad():
        _, ld = flow(x)
    expected = brute_force_logdet(lambda v: flow(v), x)
    assert abs(float(expected)) > 1e-2
    torch.testing.assert_close(ld.sum(), expected, atol=1e-9, rtol=1e-9)
    # ...and the inverse's Jacobian is the inverse's log-det.
    with torch.no_grad():
        y, _ = flow(x)
        _, ld_inv = flow(y, rev=True)
    expected_inv = brute_force_logdet(lambda v: flow(v, rev=True), y)
    torch.testing.assert_close(ld_inv.sum(), expected_inv, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------ ActNorm data-dependent init


def test_actnorm_data_dependent_init() -> None:
    torch.manual_seed(5)
    norm = ActNorm(5).train()
    assert int(norm.initialized) == 0
    scales = torch.tensor([0.1, 1.0, 3.0, 10.0, 50.0]).view(1, 5, 1, 1)
    offsets = torch.tensor([-4.0, 0.0, 2.0, 7.0, 100.0]).view(1, 5, 1, 1)
    x = torch.randn(4, 5, 8, 9) * scales + offsets
    y, ld = norm(x)
    assert int(norm.initialized) == 1
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(5), atol=1e-3, rtol=0)
    # The logdet is that of the scaling: -sum log std.
    torch.testing.assert_close(ld[0, 0, 0], -torch.log(x.std(dim=(0, 2, 3))).sum(), atol=1e-4, rtol=1e-4)

    # A second, differently distributed batch must not re-initialise.
    loc, log_scale = norm.loc.detach().clone(), norm.log_scale.detach().clone()
    x2 = torch.randn(4, 5, 8, 9) * 7 - 3
    y2, _ = norm(x2)
    torch.testing.assert_close(norm.loc.detach(), loc, atol=0, rtol=0)
    torch.testing.assert_close(norm.log_scale.detach(), log_scale, atol=0, rtol=0)
    torch.testing.assert_close(y2, (x2 + loc) * torch.exp(log_scale))
    assert y2.std(dim=(0, 2, 3)).sub(1).abs().max() > 0.5  # visibly not re-normalised


def test_actnorm_init_state_is_saved_in_state_dict() -> None:
    norm = ActNorm(3).train()
    norm(torch.randn(2, 3, 4, 4) * 5)
    fresh = ActNorm(3)
    fresh.load_state_dict(norm.state_dict())
    assert int(fresh.initialized) == 1
    x = torch.randn(2, 3, 4, 4)
    fresh.train()
    torch.testing.assert_close(fresh(x)[0], norm(x)[0])


def test_actnorm_eval_does_not_initialize() -> None:
    norm = ActNorm(4).eval()
    x = torch.randn(2, 4, 3, 3) * 5 + 3
    y, ld = norm(x)
    assert int(norm.initialized) == 0
    torch.testing.assert_close(y, x, atol=0, rtol=0)  # loc=0, log_scale=0: identity
    assert torch.count_nonzero(ld) == 0
    # Nor does the reverse pass in train mode.
    norm.train()
    norm(x, rev=True)
    assert int(norm.initialized) == 0


# ------------------------------------------------------------------ soft clamp


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_soft_clamp_bounds_log_scale(sign: float) -> None:
    clamp = 1.5
    block = AffineCoupling(6, 8, [3, 1], clamp=clamp, cond_channels=0)
    randomize_(block, 3)
    last = block.net[-1]
    with torch.no_grad():
        last.weight.mul_(1e4)
        last.bias.fill_(sign * 1e5)  # raw log-scales (and shifts) are huge
    x = torch.randn(2, 6, 4, 5)
    with torch.no_grad():
        raw = block.net(x[:, : block.c1])
        y, ld = block(x)
    assert raw[:, : block.c2].abs().min() > 100 * clamp  # the subnet really did blow up
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    bound = clamp * block.c2
    assert (ld.abs() <= bound + 1e-5).all()
    # Saturated: every log-scale sits at +-clamp.
    torch.testing.assert_close(ld, torch.full_like(ld, sign * bound), atol=1e-4, rtol=0)
    # And the inverse still recovers the passive half / roundtrip is finite.
    with torch.no_grad():
        x_rec, _ = block(y, rev=True)
    torch.testing.assert_close(x_rec[:, : block.c1], x[:, : block.c1])


def test_soft_clamp_is_near_linear_for_small_raw() -> None:
    block = AffineCoupling(4, 8, [1], clamp=2.0)
    with torch.no_grad():
        block.net[-1].bias.copy_(torch.tensor([0.01, -0.02, 0.0, 0.0]))  # s raw, then t
    x = torch.randn(1, 4, 2, 2)
    with torch.no_grad():
        _, ld = block(x)
    torch.testing.assert_close(ld, torch.full_like(ld, -0.01), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ fresh flow = identity up to ActNorm


def test_subnet_last_conv_zero_initialised() -> None:
    net = subnet(4, 6, 8, [3, 1, 3])
    assert torch.count_nonzero(net[-1].weight) == 0 and torch.count_nonzero(net[-1].bias) == 0
    assert torch.count_nonzero(net(torch.randn(1, 4, 5, 5))) == 0


def test_fresh_flow_is_identity_up_to_actnorm() -> None:
    torch.manual_seed(6)
    flow = NormalizingFlow(10, steps=4, hidden=16, kernel_sizes=[3, 1, 3], clamp=2.0,
                           positional_channels=8, seed=2)
    idx = composed_permutation(flow)
    x = torch.randn(2, 10, 5, 6, dtype=torch.float64) * 4 + 1
    flow = flow.double()

    # Eval, ActNorms uninitialised: a pure channel permutation with zero log-det.
    flow.eval()
    with torch.no_grad():
        y, ld = flow(x)
    torch.testing.assert_close(y, x[:, idx], atol=0, rtol=0)
    assert torch.count_nonzero(ld) == 0

    # Train (first batch inits ActNorms): per-channel standardisation, then the permutation.
    flow.train()
    with torch.no_grad():
        y, ld = flow(x)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(y, ((x - mean) / std)[:, idx], atol=1e-5, rtol=0)
    expected_ld = sum(n.log_scale.sum() for n in flow.norms)
    torch.testing.assert_close(ld, expected_ld.expand_as(ld))
    # (up to the 1e-6 epsilon ActNorm adds to each std, 4 steps x 10 channels)
    torch.testing.assert_close(ld[0, 0, 0], -torch.log(std).sum(), atol=1e-4, rtol=0)


def test_positional_encoding_shape_and_distinct_positions() -> None:
    like = torch.zeros(1)
    enc = positional_encoding(2, 8, 4, 5, like)
    assert enc.shape == (2, 8, 4, 5)
    assert enc.abs().max() <= 1.0
    flat = enc[0].reshape(8, -1).t()  # [positions, channels]
    assert torch.cdist(flat, flat).add(torch.eye(20) * 10).min() > 1e-3  # every position unique
