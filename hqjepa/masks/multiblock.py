"""I-JEPA multiblock masking on the patch grid, shared by the S2 and S1 images of a pair.

Per sample: `num_targets` target blocks and one context block, each a rectangle of whole patches.
The context keeps its block minus every target patch (no overlap), and at least `min_keep` patches.

Block shape. A scale s ~ U(scale) and an aspect ratio a = h/w ~ U(aspect) are drawn independently
(the reference collator reuses one uniform draw for both, so large blocks were always the widest).
The block is the rectangle (h, w) of the grid whose patch count h*w lies in
[ceil(s_lo N), floor(s_hi N)] (N = grid^2) and which is nearest to the draw in

    |log(h w) - log(s N)| + |log(h / w) - log(a)|,

so every block's size is in range exactly; its aspect ratio is the nearest the grid allows (on the
12 x 12 grid with scale 0.15-0.2 the shapes are 4x6, 5x5, 6x4 and, rarely, 4x7 / 7x4).

Block position. top ~ U{0, ..., grid - h} and left ~ U{0, ..., grid - w}, both ends included (the
reference draws from [0, grid - h), so a block never touched the last row or column).

Batching. Index tensors are padded at the end to the longest in the batch and come with a validity
mask (`ctx_valid`, `tgt_valid`); no real patch is ever truncated away (the reference cut every mask
to the batch's shortest, which dropped the bottom-right patches first). Indices within a mask are
in raster order, so sequence models see context tokens in image order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from hqjepa.config import MaskConfig


@dataclass
class MaskBatch:
    """Masks of a batch. Padded entries have index 0 and valid False."""

    ctx_idx: torch.Tensor  # int64 [B, Nc]
    ctx_valid: torch.Tensor  # bool  [B, Nc]
    tgt_idx: torch.Tensor  # int64 [B, K, T]
    tgt_valid: torch.Tensor  # bool  [B, K, T]

    def to(self, device: torch.device | str) -> MaskBatch:
        """The four mask tensors moved to `device` (non-blocking)."""
        return MaskBatch(
            *(t.to(device, non_blocking=True) for t in (self.ctx_idx, self.ctx_valid, self.tgt_idx, self.tgt_valid))
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """{ctx_idx, ctx_valid, tgt_idx, tgt_valid}: the keys a training batch carries them under."""
        return {
            "ctx_idx": self.ctx_idx,
            "ctx_valid": self.ctx_valid,
            "tgt_idx": self.tgt_idx,
            "tgt_valid": self.tgt_valid,
        }


@lru_cache(maxsize=64)
def block_shapes(grid: int, scale: tuple[float, float]) -> np.ndarray:
    """All (h, w) on a grid x grid patch grid whose patch count lies in the scale range, [S, 2].

    When no whole count lies in the range (tiny grids), the single nearest count is allowed.
    """
    n = grid * grid
    lo, hi = math.ceil(scale[0] * n - 1e-9), math.floor(scale[1] * n + 1e-9)
    if lo > hi:  # range narrower than one patch: allow the nearest achievable count
        lo = hi = min(max(1, round(0.5 * (scale[0] + scale[1]) * n)), n)
    hw = np.array([(h, w) for h in range(1, grid + 1) for w in range(1, grid + 1) if lo <= h * w <= hi])
    if len(hw) == 0:  # e.g. a prime count larger than the grid side: take the nearest areas
        areas = np.array([(h, w, abs(h * w - lo)) for h in range(1, grid + 1) for w in range(1, grid + 1)])
        hw = areas[areas[:, 2] == areas[:, 2].min(), :2]
    return hw.astype(np.int64)


def draw_block_shapes(
    rng: np.random.Generator, count: tuple[int, ...], grid: int, scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw block heights and widths of the given batch shape (see module docstring)."""
    shapes = block_shapes(grid, (float(scale[0]), float(scale[1])))
    s = rng.uniform(scale[0], scale[1], size=count) * grid * grid  # independent draws
    a = rng.uniform(aspect[0], aspect[1], size=count)
    h, w = shapes[:, 0].astype(np.float64), shapes[:, 1].astype(np.float64)
    cost = np.abs(np.log(h * w) - np.log(s)[..., None]) + np.abs(np.log(h / w) - np.log(a)[..., None])
    pick = shapes[np.argmin(cost, axis=-1)]
    return pick[..., 0], pick[..., 1]


def _rect_masks(rng: np.random.Generator, hs: np.ndarray, ws: np.ndarray, grid: int) -> np.ndarray:
    """Boolean [..., grid, grid] masks of rectangles with uniformly drawn positions, ends included."""
    top = np.floor(rng.random(hs.shape) * (grid - hs + 1)).astype(np.int64)
    left = np.floor(rng.random(ws.shape) * (grid - ws + 1)).astype(np.int64)
    r = np.arange(grid)
    rows = (r >= top[..., None]) & (r < (top + hs)[..., None])
    cols = (r >= left[..., None]) & (r < (left + ws)[..., None])
    return rows[..., :, None] & cols[..., None, :]


def _pad_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., N] boolean -> raster-ordered indices [..., M] padded with 0, and validity [..., M]."""
    counts = mask.sum(-1)
    m = max(int(counts.max()), 1)
    order = np.argsort(~mask, axis=-1, kind="stable")[..., :m]  # true positions first, in order
    valid = np.arange(m) < counts[..., None]
    return np.where(valid, order, 0), valid


def _as_numpy_rng(generator: np.random.Generator | torch.Generator | int | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return np.random.default_rng(seed)
    return np.random.default_rng(generator)


def sample_masks(
    batch_size: int, grid: int, cfg: MaskConfig, generator: np.random.Generator | torch.Generator | int | None = None
) -> MaskBatch:
    """Draw context and target masks for a batch on a grid x grid patch grid.

    Samples whose context falls below `cfg.min_keep` patches are redrawn whole (targets and
    context), up to `cfg.max_tries` times; then a ValueError says the mask settings cannot keep
    `min_keep` patches.
    """
    rng = _as_numpy_rng(generator)
    n, k = grid * grid, cfg.num_targets
    targets = np.zeros((batch_size, k, n), dtype=bool)
    context = np.zeros((batch_size, n), dtype=bool)
    todo = np.arange(batch_size)
    for _ in range(cfg.max_tries):
        m = len(todo)
        th, tw = draw_block_shapes(rng, (m, k), grid, cfg.target_scale, cfg.target_aspect)
        tgt = _rect_masks(rng, th, tw, grid).reshape(m, k, n)
        ch, cw = draw_block_shapes(rng, (m,), grid, cfg.context_scale, cfg.context_aspect)
        ctx = _rect_masks(rng, ch, cw, grid).reshape(m, n)
        if not cfg.allow_overlap:
            ctx &= ~tgt.any(1)
        targets[todo], context[todo] = tgt, ctx
        todo = todo[ctx.sum(-1) < cfg.min_keep]
        if len(todo) == 0:
            break
    else:
        raise ValueError(
            f"mask settings cannot keep mask.min_keep={cfg.min_keep} context patches on a {grid}x{grid} grid "
            f"after {cfg.max_tries} draws (target_scale={cfg.target_scale}, num_targets={k}, "
            f"context_scale={cfg.context_scale}); lower min_keep or the target scale"
        )
    ctx_idx, ctx_valid = _pad_indices(context)
    tgt_idx, tgt_valid = _pad_indices(targets)
    return MaskBatch(
        torch.from_numpy(ctx_idx), torch.from_numpy(ctx_valid), torch.from_numpy(tgt_idx), torch.from_numpy(tgt_valid)
    )
