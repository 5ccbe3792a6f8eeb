"""L_pred: I-JEPA latent prediction loss.

For target blocks i = 1..K with patch sets B_i, predictions p_j and teacher targets
y_j = LayerNorm(f_teacher(x_S2))_j (no gradient),

    L_pred = 1/K sum_i 1/|B_i| sum_{j in B_i} 1/D sum_d smoothL1_beta(p_jd - y_jd),

    smoothL1_beta(r) = r^2 / (2 beta)  if |r| < beta,  |r| - beta/2  otherwise,

averaged over the batch as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hqjepa.losses.masked import masked_token_mean


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """pred, target [B, K, T, D], valid [B, K, T] -> scalar."""
    per_token = F.smooth_l1_loss(pred, target.detach(), reduction="none", beta=beta).mean(-1)
    return masked_token_mean(per_token, valid)
