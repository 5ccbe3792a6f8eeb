"""L_pix (optional, off in the paper's objective): predict each target patch's band statistics.

MaskFeat-style: besides the teacher's tokens, the predictor's output p_j at a target patch j also
regresses, through a linear head W, a hand-made descriptor of that patch's pixels: per S2 band c,
its mean and its log standard deviation over the patch's P x P pixels,

    s_j = [mu_j1 .. mu_jC, log(sigma_j1 + eps) .. log(sigma_jC + eps)],
    z_j = (s_j - m) / v        (m, v: each feature's mean and std over the batch's patches),
    L_pix = 1/K sum_i 1/|B_i| sum_{j in B_i} 1/2C ||W p_j - z_j||^2.

Why: on the synthetic scenes some labels are read from texture more than from colour: kiln pits
show in a patch's band stds more than in its band means (a linear probe on the input's 12 band
means scores 88.0 on m-brick-kiln, on the means and stds 98.5; `experiments/raw_features.py`).
The stds of a target patch are predictable from the texture of its neighbours in the context, so
the context encoder must keep texture to lower this term. No gradient flows into the targets.
"""

from __future__ import annotations

import torch

from hqjepa.losses.masked import masked_token_mean


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """x [B, C, H, W] -> [B, N, C, P*P]: the P x P patches in the encoder's token order (row-major,
    N = (H/P)(W/P)), each band's pixels row-major within the patch."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {patch}")
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c, patch * patch)


@torch.no_grad()
def patch_band_stats(s2: torch.Tensor, patch: int, eps: float = 1e-3) -> torch.Tensor:
    """s2 [B, C, H, W] -> standardised descriptors z [B, N, 2C], N = (H/P)(W/P) patches in the
    encoder's token order (row-major), features [mu_1..mu_C, log(sigma_1+eps)..log(sigma_C+eps)]."""
    c = s2.shape[1]
    x = patchify(s2.float(), patch)
    stats = torch.cat([x.mean(-1), torch.log(x.std(-1) + eps)], dim=-1)
    flat = stats.reshape(-1, 2 * c)
    return (stats - flat.mean(0)) / flat.std(0).clamp_min(1e-6)


def pixel_stats_loss(pred_stats: torch.Tensor, target_stats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """pred_stats, target_stats [B, K, T, 2C], valid [B, K, T] -> scalar (mean squared error per
    feature, averaged over each block's valid tokens, then over blocks)."""
    if pred_stats.shape != target_stats.shape:
        raise ValueError(f"pixel_stats_loss: predicted {tuple(pred_stats.shape)} vs target {tuple(target_stats.shape)}")
    per = (pred_stats.float() - target_stats).square().mean(-1)
    return masked_token_mean(per, valid)
