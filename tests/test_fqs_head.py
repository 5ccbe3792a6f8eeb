"""FQSHead and the L_fqs module: shapes, gradients, the collapse gap."""

from __future__ import annotations

import math

import pytest
import torch

from hqjepa.losses.fqs import collapse_gap, fqs_loss, shuffled_pairs
from hqjepa.quantum.fidelity import swap_test_fidelity
from hqjepa.quantum.head import FQSHead, FQSOutput


def _inputs(batch: int = 6, blocks: int = 4, dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, dim, generator=g, requires_grad=True)
    tgt = torch.randn(batch, blocks, dim, generator=g)  # teacher: arrives detached
    query = torch.randn(batch, blocks, dim, generator=g, requires_grad=True)
    return ctx, tgt, query


def test_output_shapes_and_loss_formula():
    torch.manual_seed(0)
    head = FQSHead(16)
    out = head(*_inputs())
    assert isinstance(out, FQSOutput)
    assert out.loss.shape == () and out.fidelity.shape == (6, 4) and out.gap.shape == ()
    assert torch.allclose(out.loss, (1 - out.fidelity).mean())
    assert not out.gap.requires_grad
    assert ((out.fidelity >= 0) & (out.fidelity <= 1 + 1e-6)).all()


def test_head_is_the_documented_circuit():
    """The head's fidelity is swap_test_fidelity of pi*tanh(linear) angles, student shared by blocks."""
    torch.manual_seed(1)
    head = FQSHead(16, enc_layers=2, pred_layers=1).double()
    ctx, tgt, query = (x.detach().double() for x in _inputs(batch=3, blocks=2))
    out = head(ctx, tgt, query)
    for b in range(3):
        for k in range(2):
            s = (math.pi * torch.tanh(head.context_proj(ctx[b]))).view(1, 2, 5, 3)
            t = (math.pi * torch.tanh(head.target_proj(tgt[b, k]))).view(1, 2, 5, 3)
            p = (math.pi * torch.tanh(head.query_proj(query[b, k]))).view(1, 1, 5, 3)
            assert torch.allclose(out.fidelity[b, k], swap_test_fidelity(s, t, p)[0], atol=1e-12)


def test_gradients_reach_projections_and_inputs():
    torch.manual_seed(2)
    head = FQSHead(16)
    ctx, tgt, query = _inputs()
    head(ctx, tgt, query).loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_without_predictor_layers():
    torch.manual_seed(3)
    head = FQSHead(16, enc_layers=1, pred_layers=0)
    assert head.query_proj is None
    ctx, tgt, query = _inputs()
    out = head(ctx, tgt, query)
    out.loss.backward()
    assert out.fidelity.shape == (6, 4) and ctx.grad.abs().sum() > 0 and query.grad is None


def test_gap_is_zero_for_identical_teachers():
    """All teacher summaries equal: a shuffled teacher is the same teacher, gap = 0 exactly."""
    torch.manual_seed(4)
    head = FQSHead(16)
    ctx, _, query = _inputs()
    tgt = torch.randn(1, 1, 16).expand(6, 4, 16)
    assert head(ctx, tgt, query).gap.abs() < 1e-6


def test_gap_is_small_for_unrelated_teachers_and_large_for_matched_ones():
    """Teachers independent of the context (already shuffled): gap ~ 0. Teacher = student (same
    projection of the same summary, no predictor): matched F = 1, shuffled F < 1, gap clearly > 0."""
    torch.manual_seed(5)
    head = FQSHead(16, enc_layers=2, pred_layers=0)
    ctx, tgt, query = _inputs(batch=256, blocks=1, seed=5)
    unrelated = head(ctx, tgt, query)
    assert abs(float(unrelated.gap)) < 0.02
    with torch.no_grad():
        head.target_proj.load_state_dict(head.context_proj.state_dict())
    matched = head(ctx, ctx.detach().unsqueeze(1), query)
    assert torch.allclose(matched.fidelity, torch.ones_like(matched.fidelity), atol=1e-5)
    assert matched.loss < 1e-5
    assert matched.gap > 0.5


def test_gap_needs_two_samples():
    head = FQSHead(16)
    ctx, tgt, query = _inputs(batch=1)
    assert torch.isnan(head(ctx, tgt, query).gap)


def test_pennylane_backend_head_matches_statevector():
    torch.manual_seed(6)
    head = FQSHead(8, enc_layers=1, pred_layers=1).double()
    ctx, tgt, query = (x.detach().double() for x in _inputs(batch=2, blocks=1, dim=8, seed=6))
    ctx.requires_grad_()
    sv = head(ctx, tgt, query)
    (g_sv,) = torch.autograd.grad(sv.loss, ctx)
    head.backend = "pennylane"
    pl = head(ctx, tgt, query)
    (g_pl,) = torch.autograd.grad(pl.loss, ctx)
    assert torch.allclose(sv.fidelity, pl.fidelity, atol=1e-10)
    assert torch.allclose(sv.gap, pl.gap, atol=1e-10)
    assert torch.allclose(g_sv, g_pl, atol=1e-10)


def test_autocast_bfloat16_keeps_float32_fidelity():
    torch.manual_seed(7)
    head = FQSHead(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(*_inputs())
    assert out.fidelity.dtype == torch.float32
    out.loss.backward()
    assert head.context_proj.weight.grad is not None


@pytest.mark.parametrize("n", range(2, 12))
def test_shuffled_pairs_is_a_derangement(n):
    perm = shuffled_pairs(n)
    assert sorted(perm.tolist()) == list(range(n))
    assert (perm != torch.arange(n)).all()


def test_loss_and_gap_formulas():
    f = torch.tensor([[1.0, 0.5], [0.25, 0.75]])
    assert torch.isclose(fqs_loss(f), torch.tensor(0.375))
    assert torch.isclose(collapse_gap(f, torch.full((2, 2), 0.5)), torch.tensor(0.125))
    assert torch.isnan(collapse_gap(f[:1], f[:1]))


def test_nonfinite_summary_gives_nan_loss_not_an_error():
    """In training a NaN summary (from a bad pixel) must surface as a NaN loss, which the engine
    skips and counts; the public swap_test_fidelity still refuses NaN angles."""
    head = FQSHead(8)
    ctx, tgt, query = torch.randn(3, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    ctx[1, 0] = float("nan")
    out = head(ctx, tgt, query)
    assert torch.isnan(out.loss) and torch.isnan(out.fidelity[1]).all() and torch.isfinite(out.fidelity[0]).all()
