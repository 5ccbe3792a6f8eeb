"""loss.fqs_mode siamese: the FQS head trained alone separates matched from shuffled (student,
teacher) pairs, where the paper's term collapses to one state; its angles are batch-standardised
and its teacher side carries no gradient; the default mode computes what it always did."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hqjepa.quantum.fidelity import swap_test_fidelity
from hqjepa.quantum.head import FQSHead

DIM, LATENT, BLOCKS = 32, 8, 4


def summaries(seed: int = 0):
    """A sampler of (context [B, D], targets [B, K, D], queries [B, K, D]) whose matched context and
    target summaries share a scene latent, both through one fixed map (as token means of one
    encoder family are): what the FQS term should learn to tell apart from another scene's."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(LATENT, DIM, generator=g) / math.sqrt(LATENT)
    pos = torch.randn(8, DIM, generator=g) / math.sqrt(8)

    def ln(x):
        return nn.functional.layer_norm(x, (DIM,))

    def sample(batch: int):
        u = torch.randn(batch, LATENT, generator=g)
        v = u[:, None] + 0.5 * torch.randn(batch, BLOCKS, LATENT, generator=g)
        ctx = ln(u @ enc + 0.1 * torch.randn(batch, DIM, generator=g))
        tgt = ln(v @ enc + 0.1 * torch.randn(batch, BLOCKS, DIM, generator=g))
        return ctx, tgt, torch.randn(batch, BLOCKS, 8, generator=g) @ pos

    return sample


def train_head(mode: str, steps: int = 150) -> tuple[float, float, float]:
    """(mean loss of the first 20 steps, held-out loss, held-out gap) after `steps` of Adam."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        return _train_head(mode, steps)
    finally:
        torch.set_num_threads(threads)


def _train_head(mode: str, steps: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    sample = summaries()
    head = FQSHead(DIM, 2, 1, mode=mode)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    held_out = sample(128)
    first = []
    for step in range(steps):
        out = head(*sample(32))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step < 20:
            first.append(float(out.loss.detach()))
    with torch.no_grad():
        ev = head(*held_out)
    return sum(first) / len(first), float(ev.loss), float(ev.gap)


def test_siamese_mode_separates_matched_from_shuffled_pairs_where_the_paper_term_collapses():
    paper_first, paper_loss, paper_gap = train_head("paper")
    first, loss, gap = train_head("siamese")
    assert loss < first - 0.1  # the loss falls ...
    assert gap >= 0.1  # ... by matching each student to its own teacher, not to every teacher
    assert paper_loss < paper_first and paper_gap < 0.05  # the paper's term falls with no gap to speak of
    assert gap > paper_gap + 0.1


def test_siamese_angles_are_standardised_over_the_batch_and_the_teacher_side_has_no_gradient():
    head = FQSHead(DIM, 2, 1, mode="siamese", angle_scale=0.5)
    assert head.target_proj is None and not head.query_proj.weight.any()  # no teacher map; identity predictor
    ctx, tgt, query = summaries()(64)
    student, teacher, predictor = head.angles(ctx, tgt, query)
    assert not teacher.requires_grad and student.requires_grad
    assert not predictor.any()
    for angles, first in ((student[:, 0], True), (teacher, False)):
        z = torch.atanh(angles / math.pi) / 0.5  # the standardised projection
        mean, var = z.mean(0), z.var(0, correction=0)
        assert mean.abs().max() < 1e-4 and (var - 1).abs().max() < 1e-3, first
    with pytest.raises(ValueError, match="mode"):
        FQSHead(DIM, mode="contrastive")


def test_the_default_mode_computes_what_it_always_did():
    torch.manual_seed(1)
    head = FQSHead(DIM, 2, 1)
    assert head.mode == "paper" and head.target_proj is not None
    ctx, tgt, query = summaries(1)(8)
    out = head(ctx, tgt, query)
    s = (math.pi * torch.tanh(head.context_proj(ctx))).reshape(8, 2, 5, 3)
    t = (math.pi * torch.tanh(head.target_proj(tgt))).reshape(8, BLOCKS, 2, 5, 3)
    p = (math.pi * torch.tanh(head.query_proj(query))).reshape(8, BLOCKS, 1, 5, 3)
    s = s.unsqueeze(1).expand(-1, BLOCKS, -1, -1, -1)
    f = swap_test_fidelity(s.flatten(0, 1), t.flatten(0, 1), p.flatten(0, 1)).view(8, BLOCKS)
    assert torch.equal(out.fidelity, f) and torch.equal(out.loss, (1 - f).mean())
