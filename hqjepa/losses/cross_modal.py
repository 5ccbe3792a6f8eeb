"""L_cm: S1 -> S2 cross-modal token alignment.

The S1 patches of each target block B_i are encoded by the S1 encoder g and mapped into the S2
embedding space by a projection head h; they regress onto the predicted S2 target tokens p_j:

    L_cm = 1/K sum_i 1/|B_i| sum_{j in B_i} 1/D sum_d rho(LN(p_j)_d - LN(h(g(x_S1))_j)_d),

with rho the smooth-L1 of L_pred (or the squared error) and LN a layer norm without affine
parameters: the comparison happens in the same normalised token space as L_pred's teacher
targets. Without it the term is trivially small at initialisation (both sides start near zero)
and grows while the predictor's outputs grow to the targets' scale, so its curve says nothing
about alignment; normalised, it starts near its chance level and falls as S1 and S2 agree.
Both sides receive gradients, as in the paper: the S1 branch learns to land where the S2
predictor points, and the predictor is pulled towards what the SAR view of the same ground
supports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hqjepa.losses.masked import masked_token_mean


def cross_modal_loss(
    pred_s2: torch.Tensor, proj_s1: torch.Tensor, valid: torch.Tensor, kind: str = "smooth_l1", beta: float = 1.0
) -> torch.Tensor:
    """pred_s2, proj_s1 [B, K, T, D], valid [B, K, T] -> scalar."""
    pred_s2 = F.layer_norm(pred_s2, pred_s2.shape[-1:])
    proj_s1 = F.layer_norm(proj_s1, proj_s1.shape[-1:])
    if kind == "smooth_l1":
        per = F.smooth_l1_loss(pred_s2, proj_s1, reduction="none", beta=beta)
    elif kind == "mse":
        per = (pred_s2 - proj_s1).square()
    else:
        raise ValueError(f"cross_modal_loss: kind must be 'smooth_l1' or 'mse', got {kind!r}")
    return masked_token_mean(per.mean(-1), valid)
