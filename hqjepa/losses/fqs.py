"""L_fqs: Fidelity Quantum Similarity, the infidelity of an 11-qubit SWAP test, and its collapse gap.

For target block k of sample b, the student state |s_bk> (context summary encoded in L_enc layers,
then L_pred predictor layers from the block's mask query) and the teacher state |t_bk> (target
summary, L_enc layers) are compared by the SWAP test (`hqjepa.quantum`):

    F_bk = <Z_ancilla> = |<s_bk|t_bk>|^2 in [0, 1],
    L_fqs = 1/(B K) sum_b sum_k (1 - F_bk).

L_fqs = 0 does not mean learning: states that ignore their inputs (e.g. all angles driven to the
same constants on both registers) give F = 1 for every pair. The collapse gap tells them apart:

    gap = 1/(B K) sum_bk F(s_bk, t_bk) - 1/(B K) sum_bk F(s_bk, t_pi(b)k),

with pi a derangement of the batch (pi(b) = b + floor(B/2) mod B: every student is paired with
another sample's teacher for the same block index). gap ~ 0 at low loss is the trivial solution;
gap > 0 means the fidelity depends on which sample the teacher came from.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fqs_loss(fidelity: Tensor) -> Tensor:
    """L_fqs = mean(1 - F) over all entries of `fidelity` (e.g. [B, K])."""
    return (1.0 - fidelity).mean()


def shuffled_pairs(batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """Derangement pi of range(batch_size), pi(b) = b + floor(B/2) mod B (B >= 2: no fixed point)."""
    return torch.roll(torch.arange(batch_size, device=device), -(batch_size // 2))


def collapse_gap(matched: Tensor, shuffled: Tensor) -> Tensor:
    """gap = mean F(matched pairs) - mean F(shuffled pairs), without gradient; NaN if B < 2."""
    if matched.shape[0] < 2:
        return torch.full((), float("nan"), dtype=matched.dtype, device=matched.device)
    return matched.detach().mean() - shuffled.detach().mean()
