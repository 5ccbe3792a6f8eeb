"""Means over padded token sets, shared by the token-level losses."""

from __future__ import annotations

import torch


def masked_token_mean(per_token: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """per_token [B, K, T], valid [B, K, T] -> mean over each block's valid tokens, then over the
    B*K blocks: every block counts equally, whatever its size."""
    w = valid.to(per_token.dtype)
    per_block = (per_token * w).sum(-1) / w.sum(-1).clamp_min(1.0)
    return per_block.mean()


def masked_pool(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """tokens [..., T, D], valid [..., T] -> mean of the valid tokens [..., D]."""
    w = valid.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(-2) / w.sum(-2).clamp_min(1.0)
