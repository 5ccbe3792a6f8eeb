"""Task heads on encoder tokens, and the training loss of each task kind.

Classification: z = mean_n tokens[:, n, :] (mean over all patch tokens), logits = W z + b.
Segmentation (linear-per-patch decoder): logits_patch[:, :, i, j] = W t_(i,j) + b for each patch
token t on the h x w grid, then bilinear upsampling (align_corners=False) of the [B, K, h, w] map
to the mask's H x W. The same heads serve linear probing (encoder frozen) and fine-tuning.

A feature standardisation z' = (z - mu) / sigma (mu, sigma of the train features, fixed buffers)
precedes the linear layer in linear probing; it is itself affine, so the probe stays linear, and it
lets one learning-rate grid fit encoders whose feature scales differ (pretrained vs random-init),
as MAE's linear probe does with a non-affine BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FeatureNorm(nn.Module):
    """z' = (z - mu) / sigma with fixed per-dimension statistics (identity until `fit`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sigma", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> FeatureNorm:
        """Set mu and sigma (clamped >= 1e-6) per dimension from features [..., D]; returns self."""
        flat = features.reshape(-1, features.shape[-1]).float()
        self.mu.copy_(flat.mean(0))
        self.sigma.copy_(flat.std(0).clamp_min(1e-6))
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., D] -> (z - mu) / sigma, same shape."""
        return (z - self.mu) / self.sigma


class PooledLinearHead(nn.Module):
    """tokens [B, N, D] -> mean over N -> (optional FeatureNorm) -> Linear(D, K)."""

    def __init__(self, dim: int, n_classes: int, norm: bool = False):
        super().__init__()
        self.norm = FeatureNorm(dim) if norm else nn.Identity()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D] (or pooled features [B, D]) -> logits [B, K]."""
        z = x.mean(dim=1) if x.dim() == 3 else x  # pre-pooled features [B, D] pass straight through
        return self.linear(self.norm(z))


class PatchLinearDecoder(nn.Module):
    """tokens [B, h*w, D] -> per-patch Linear(D, K) -> [B, K, h, w] -> bilinear to (H, W)."""

    def __init__(self, dim: int, n_classes: int, norm: bool = False):
        super().__init__()
        self.norm = FeatureNorm(dim) if norm else nn.Identity()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        """tokens [B, h*w, D] on the `grid` (h, w) -> logits [B, K, H, W] at `out_size` (H, W)."""
        b, n, _ = tokens.shape
        h, w = grid
        if h * w != n:
            raise ValueError(f"{n} tokens do not form a {h} x {w} grid")
        logits = self.linear(self.norm(tokens.float()))  # [B, N, K]
        logits = logits.transpose(1, 2).reshape(b, -1, h, w)  # [B, K, h, w]
        return F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)


def balanced_bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GeoBench's multi-label loss (geobench-experiments `_balanced_binary_cross_entropy_with_logits`):
    L = mean_{y=0} BCE + mean_{y=1} BCE, each term over the batch's negatives / positives
    (a term with no entries in the batch is left out)."""
    loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    pos = target > 0.5
    terms = [loss[m].mean() for m in (~pos, pos) if m.any()]
    return torch.stack(terms).sum()


def task_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (multi-class, segmentation; no ignore index, as GeoBench) or balanced BCE."""
    if kind == "multilabel":
        return balanced_bce_with_logits(logits, target)
    return F.cross_entropy(logits, target.long())
