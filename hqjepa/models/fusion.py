"""Bidirectional cross-attention fusion of per-block S2 and S1 descriptors (the space SIGReg shapes).

For the K target blocks of a sample, with S2 descriptors a [K, D] and S1 descriptors b [K, D]:

    a' = a + CrossAttn(LN(a) -> LN(b)),   b' = b + CrossAttn(LN(b) -> LN(a)),
    fused = W [a'; b'] + c                (a learned linear fusion layer, [K, 2D] -> [K, D])

so each modality's block descriptor is conditioned on the other modality's blocks of the same scene.
"""

from __future__ import annotations

import torch
from torch import nn

from hqjepa.models.blocks import CrossAttention


class CrossModalFusion(nn.Module):
    """Bidirectional cross-attention between S2 and S1 block descriptors, then a linear fusion
    (module docstring for the formula)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_s2 = nn.LayerNorm(dim)
        self.norm_s1 = nn.LayerNorm(dim)
        self.s2_from_s1 = CrossAttention(dim, num_heads)
        self.s1_from_s2 = CrossAttention(dim, num_heads)
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """s2, s1 [B, K, D] -> fused [B, K, D]."""
        a, b = self.norm_s2(s2), self.norm_s1(s1)
        s2 = s2 + self.s2_from_s1(a, b)
        s1 = s1 + self.s1_from_s2(b, a)
        return self.fuse(torch.cat([s2, s1], dim=-1))
