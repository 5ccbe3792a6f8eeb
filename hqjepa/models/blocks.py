"""Transformer building blocks with key-padding masks (pre-norm, as in ViT / I-JEPA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Transformer feed-forward layer: fc2(GELU(fc1(x))), dim -> hidden -> dim."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> [..., D]."""
        return self.fc2(self.act(self.fc1(x)))


def _attn_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """[B, N] validity -> SDPA boolean mask [B, 1, 1, N] (True = may attend)."""
    return None if valid is None else valid[:, None, None, :]


class Attention(nn.Module):
    """Multi-head self-attention; padded keys are masked out."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, D], valid [B, N] (None: all real) -> [B, N, D]; padded keys get no attention."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_attn_mask(valid))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Multi-head attention of queries x over a separate key/value sequence y."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Queries x [B, N, D] attend over y [B, M, D] (padded keys masked by y_valid [B, M]) -> [B, N, D]."""
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(y).view(b, y.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_attn_mask(y_valid))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class AttentionBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, D], valid [B, N] -> [B, N, D] (pre-norm residual block)."""
        x = x + self.attn(self.norm1(x), valid)
        return x + self.mlp(self.norm2(x))
