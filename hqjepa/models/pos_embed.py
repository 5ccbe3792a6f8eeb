"""Fixed 2-D sine-cosine positional embeddings (MAE / I-JEPA), for any patch grid.

For a patch at row r, column c and embedding width D (divisible by 4), half the channels encode r
and half encode c, each as [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (D/4)), k < D/4.
Being a closed form, the table is computed for whatever grid an image has (GeoBench images of 32 to
256 px): no interpolation of learned tables is needed.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[P] positions -> [P, dim] embedding: half sines, half cosines."""
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """[grid_h * grid_w, dim] float32 table in raster order (row-major)."""
    grid_w = grid_h if grid_w is None else grid_w
    if dim % 4:
        raise ValueError(f"sincos_2d: embedding width must be divisible by 4, got {dim}")
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1).float()
