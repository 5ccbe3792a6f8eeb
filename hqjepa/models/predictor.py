"""I-JEPA predictor: a narrow transformer from context tokens to target-token predictions.

Input per target block: the context tokens, embedded to the predictor width and given their
positions, followed by one learned mask token per target patch plus that patch's position. The
outputs at the mask tokens, projected back to the encoder width, are the predictions. The K blocks
of a sample run as K independent sequences (a block never sees another block's mask tokens).
"""

from __future__ import annotations

import torch
from torch import nn

from hqjepa.models.blocks import AttentionBlock
from hqjepa.models.encoder import gather_tokens, init_weights
from hqjepa.models.pos_embed import sincos_2d


class Predictor(nn.Module):
    """I-JEPA predictor (module docstring): embed_dim -> predictor_dim, `depth` attention blocks, a learned
    mask token, fixed sin-cos positions, projection back to embed_dim."""

    def __init__(self, embed_dim: int, predictor_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.predictor_dim = predictor_dim
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.blocks = nn.ModuleList([AttentionBlock(predictor_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(predictor_dim)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def pos_embed(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """[h*w, predictor_dim] fixed sin-cos positions for a grid (cached per grid)."""
        if grid not in self._pos_cache:
            self._pos_cache[grid] = sincos_2d(self.predictor_dim, *grid)
        return self._pos_cache[grid].to(device)

    def forward(
        self,
        ctx_tokens: torch.Tensor,
        ctx_idx: torch.Tensor,
        ctx_valid: torch.Tensor,
        tgt_idx: torch.Tensor,
        tgt_valid: torch.Tensor,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """ctx_tokens [B, Nc, D], ctx_idx/ctx_valid [B, Nc], tgt_idx/tgt_valid [B, K, T] -> [B, K, T, D]."""
        b, nc, _ = ctx_tokens.shape
        k, t = tgt_idx.shape[1], tgt_idx.shape[2]
        pos = self.pos_embed(grid, ctx_tokens.device).to(ctx_tokens.dtype).unsqueeze(0).expand(b, -1, -1)
        ctx = self.embed(ctx_tokens) + gather_tokens(pos, ctx_idx)  # [B, Nc, P]
        ctx = ctx.unsqueeze(1).expand(-1, k, -1, -1).reshape(b * k, nc, -1)
        queries = self.mask_token + gather_tokens(pos, tgt_idx).reshape(b * k, t, -1)  # [B*K, T, P]
        x = torch.cat([ctx, queries], dim=1)
        valid = torch.cat(
            [ctx_valid.unsqueeze(1).expand(-1, k, -1).reshape(b * k, nc), tgt_valid.reshape(b * k, t)], dim=1
        )
        for blk in self.blocks:
            x = blk(x, valid)
        out = self.proj(self.norm(x[:, nc:]))
        return out.reshape(b, k, t, -1)
