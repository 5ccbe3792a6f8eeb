"""Hybrid Mamba-ViT encoder: patch embedding, fixed 2-D sin-cos positions, then `n_mamba`
bidirectional Mamba blocks followed by attention blocks, and a final LayerNorm.

The same class serves the S2 student and teacher (12 bands, full depth) and the smaller S1 encoder
(VV, VH). Inputs may be any size that is a multiple of the patch size; tokens can be restricted to
a subset of patches (`keep_idx`), given per sample ([B, M]) or per block ([B, K, T], each block
encoded as its own sequence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from hqjepa.models.blocks import AttentionBlock, Mlp
from hqjepa.models.mamba import BiMamba
from hqjepa.models.pos_embed import sincos_2d

if TYPE_CHECKING:  # the portable encoder (torch + safetensors only) must not need PyYAML through config
    from hqjepa.config import ModelConfig


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, (H/p)(W/p), D] by a stride-p convolution (one linear map per patch)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x [B, C, H, W] -> (tokens [B, (H/p)(W/p), D], grid (H/p, W/p)); H and W must be multiples of p."""
        p = self.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class MambaBlock(nn.Module):
    """x + BiMamba(LN(x)), then x + MLP(LN(x)): a Mamba mixer in place of attention (MambaVision-style
    blocks keep the MLP so the Mamba and attention halves have the same shape)."""

    def __init__(self, dim: int, mlp_ratio: float, d_state: int, d_conv: int, expand: int, backend: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = BiMamba(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, D], valid [B, N] (None: all real) -> [B, N, D] (pre-norm residual block)."""
        x = x + self.mixer(self.norm1(x), valid)
        return x + self.mlp(self.norm2(x))


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], idx [B, M] or [B, K, T] -> [B, M, D] or [B, K, T, D]."""
    b, d = x.shape[0], x.shape[-1]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, d))
    return out.reshape(*idx.shape, d)


class HybridEncoder(nn.Module):
    """Hybrid Mamba-ViT encoder (module docstring): patch embedding of `bands`, fixed sin-cos positions,
    `n_mamba` bidirectional Mamba blocks then `depth - n_mamba` attention blocks, final LayerNorm."""

    def __init__(
        self,
        bands: tuple[str, ...],
        embed_dim: int,
        depth: int,
        n_mamba: int,
        num_heads: int,
        patch_size: int = 10,
        mlp_ratio: float = 4.0,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        mamba_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.bands = tuple(bands)
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(len(bands), embed_dim, patch_size)
        self.blocks = nn.ModuleList(
            [MambaBlock(embed_dim, mlp_ratio, d_state, d_conv, expand, mamba_backend) for _ in range(n_mamba)]
            + [AttentionBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth - n_mamba)]
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        init_weights(self)

    def pos_embed(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """[h*w, D] fixed positions for a grid (cached per grid; not a parameter, not saved)."""
        key = grid
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(self.embed_dim, *grid)
        return self._pos_cache[key].to(device)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> patch tokens plus fixed positions, [B, h*w, D]."""
        if x.shape[1] != len(self.bands):
            raise ValueError(f"encoder expects {len(self.bands)} bands {list(self.bands)}, got {x.shape[1]} channels")
        tokens, grid = self.patch_embed(x)
        return tokens + self.pos_embed(grid, tokens.device).to(tokens.dtype)

    def forward(
        self, x: torch.Tensor, keep_idx: torch.Tensor | None = None, keep_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, C, H, W] (bands in `self.bands` order) -> tokens [B, N, D], or the kept tokens
        [B, M, D] / [B, K, T, D] when `keep_idx` is [B, M] / [B, K, T] (padded entries are zero)."""
        tokens = self._embed(x)
        out_shape = None
        valid = None
        if keep_idx is not None:
            tokens = gather_tokens(tokens, keep_idx)
            if keep_idx.dim() == 3:  # one sequence per block
                out_shape = tokens.shape
                tokens = tokens.flatten(0, 1)
                valid = None if keep_valid is None else keep_valid.flatten(0, 1)
            else:
                valid = keep_valid
            if valid is not None:
                tokens = tokens * valid.unsqueeze(-1).to(tokens.dtype)
        for blk in self.blocks:
            tokens = blk(tokens, valid)
        tokens = self.norm(tokens)
        if valid is not None:
            tokens = tokens * valid.unsqueeze(-1).to(tokens.dtype)
        return tokens if out_shape is None else tokens.reshape(out_shape)

    def block_tokens(self, x: torch.Tensor, last: int = 1) -> torch.Tensor:
        """Probing features: the tokens after each of the last `last` blocks, each through the final
        norm, concatenated along channels: x [B, C, H, W] -> [B, N, last * D]. last = 1 is `forward(x)`.
        (DINO's linear evaluation of ViT-S concatenates its last four blocks the same way.)"""
        return torch.cat(self.block_outputs(x, last), dim=-1)

    def block_outputs(self, x: torch.Tensor, last: int = 1) -> list[torch.Tensor]:
        """The tokens after each of the last `last` blocks, each through the final norm: a list of
        `last` tensors [B, N, D], the shallowest first."""
        if not 1 <= last <= len(self.blocks):
            raise ValueError(f"feature blocks: asked for the last {last}, the encoder has {len(self.blocks)} blocks")
        tokens = self._embed(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens, None)
            if i >= len(self.blocks) - last:
                outs.append(self.norm(tokens))
        return outs


def init_weights(module: nn.Module) -> None:
    """I-JEPA init (truncated normal 0.02 for linear and patch weights, zero biases, unit norms);
    Mamba mixers keep their own upstream initialisation (dt bias, A_log, D)."""
    for name, m in module.named_modules():
        if ".mixer" in f".{name}" or isinstance(m, BiMamba):
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_encoder(cfg: ModelConfig) -> HybridEncoder:
    """The S2 context/target encoder of a config."""
    return HybridEncoder(
        cfg.s2_bands,
        cfg.embed_dim,
        cfg.depth,
        cfg.n_mamba,
        cfg.num_heads,
        cfg.patch_size,
        cfg.mlp_ratio,
        cfg.d_state,
        cfg.d_conv,
        cfg.expand,
        cfg.mamba_backend,
    )


def build_s1_encoder(cfg: ModelConfig) -> HybridEncoder:
    """The smaller modality-specific S1 encoder (attention blocks only: it sees short per-block
    sequences of about 25 tokens, where a scan adds little)."""
    return HybridEncoder(cfg.s1_bands, cfg.s1_embed_dim, cfg.s1_depth, 0, cfg.s1_heads, cfg.patch_size, cfg.mlp_ratio)
