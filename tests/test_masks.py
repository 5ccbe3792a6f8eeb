"""Multiblock masking statistics over thousands of draws (I-JEPA multiblock: 4 target blocks, one context block)."""

import numpy as np
import pytest
import torch

from hqjepa.config import MaskConfig
from hqjepa.masks.multiblock import block_shapes, draw_block_shapes, sample_masks

GRID = 12
N = GRID * GRID


@pytest.fixture(scope="module")
def draws():
    cfg = MaskConfig()
    return cfg, sample_masks(4000, GRID, cfg, np.random.default_rng(0))


def _sets(idx, valid):
    return [set(i[v].tolist()) for i, v in zip(idx, valid, strict=True)]


def test_every_cell_can_be_a_target_and_context(draws):
    _, m = draws
    tgt_hits = np.zeros(N, dtype=int)
    np.add.at(tgt_hits, m.tgt_idx[m.tgt_valid].numpy(), 1)
    assert (tgt_hits > 0).all(), "some grid cells are never a target"
    # the corners are reached: the reference collator never touched the last row/column
    for cell in (0, GRID - 1, N - GRID, N - 1):
        assert tgt_hits[cell] > 0
    ctx_hits = np.zeros(N, dtype=int)
    np.add.at(ctx_hits, m.ctx_idx[m.ctx_valid].numpy(), 1)
    assert (ctx_hits > 0).all()
    # uniform positions with both ends included: the grid is covered symmetrically, so the last
    # row and column are hit as often as the first ones (within sampling noise)
    g = tgt_hits.reshape(GRID, GRID)
    for first, last in ((g[0].sum(), g[-1].sum()), (g[:, 0].sum(), g[:, -1].sum())):
        assert abs(first - last) < 0.1 * max(first, last)


def test_target_sizes_in_range_and_rectangular(draws):
    cfg, m = draws
    lo, hi = int(np.ceil(cfg.target_scale[0] * N)), int(np.floor(cfg.target_scale[1] * N))
    counts = m.tgt_valid.sum(-1).numpy()
    assert counts.min() >= lo and counts.max() <= hi
    for b in range(50):  # each target is a full rectangle
        for k in range(cfg.num_targets):
            cells = m.tgt_idx[b, k][m.tgt_valid[b, k]].numpy()
            r, c = cells // GRID, cells % GRID
            assert len(cells) == (r.max() - r.min() + 1) * (c.max() - c.min() + 1)


def test_context_and_targets_never_overlap_and_min_keep(draws):
    cfg, m = draws
    ctx = _sets(m.ctx_idx, m.ctx_valid)
    for b in range(len(ctx)):
        for k in range(cfg.num_targets):
            assert not ctx[b] & set(m.tgt_idx[b, k][m.tgt_valid[b, k]].tolist())
    assert min(len(c) for c in ctx) >= cfg.min_keep


def test_padding_keeps_every_real_patch(draws):
    _, m = draws
    # valid entries first, in raster order, padding only at the end
    v = m.ctx_valid
    assert (v[:, :-1] | ~v[:, 1:]).all(), "a padded slot precedes a valid one"
    for b in range(100):
        i = m.ctx_idx[b][v[b]]
        assert torch.all(i[1:] > i[:-1])
    # the longest context in the batch is kept whole (nothing truncated to the shortest)
    assert m.ctx_idx.shape[1] == int(v.sum(1).max())


def test_scale_and_aspect_are_independent_draws():
    # on a fine grid (where rounding to whole patches is negligible) the realised block area and
    # aspect ratio are uncorrelated; with one shared draw (the reference's flaw) they move together
    h, w = draw_block_shapes(np.random.default_rng(1), (20000,), 64, (0.15, 0.2), (0.75, 1.5))
    assert abs(np.corrcoef(h * w, np.log(h / w))[0, 1]) < 0.05
    h, w = draw_block_shapes(np.random.default_rng(1), (20000,), GRID, (0.15, 0.2), (0.75, 1.5))
    assert {(4, 6), (5, 5), (6, 4)} <= set(zip(h.tolist(), w.tolist(), strict=True))


def test_min_keep_impossible_is_a_clear_error():
    cfg = MaskConfig(num_targets=8, target_scale=(0.9, 1.0), min_keep=100, max_tries=3)
    with pytest.raises(ValueError, match="cannot keep mask.min_keep=100"):
        sample_masks(4, GRID, cfg, 0)


def test_block_shapes_on_tiny_grid():
    assert len(block_shapes(3, (0.15, 0.2))) > 0


def test_torch_generator_is_reproducible():
    cfg = MaskConfig()
    a = sample_masks(8, GRID, cfg, torch.Generator().manual_seed(3))
    b = sample_masks(8, GRID, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.ctx_idx, b.ctx_idx) and torch.equal(a.tgt_idx, b.tgt_idx)
