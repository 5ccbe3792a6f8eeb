"""FQSHead: summaries -> rotation angles -> SWAP-test fidelity -> L_fqs and the collapse gap.

Angles are linear projections bounded by pi * tanh (an angle and its 2 pi shift give the same
gate, so the bound loses nothing and keeps gradients from chasing unbounded angles):

    student   = pi tanh(W_c c_b + b_c)   -> [L_enc, 5, 3]   context summary, shared by the K blocks
    teacher   = pi tanh(W_t t_bk + b_t)  -> [L_enc, 5, 3]   target summary of block k (detached)
    predictor = pi tanh(W_q m_bk + b_q)  -> [L_pred, 5, 3]  mask query of block k

The student register runs the student's L_enc layers then the predictor's L_pred layers; the
teacher register runs the teacher's L_enc layers. Loss and gap: `hqjepa.losses.fqs`.

`mode="siamese"` (`loss.fqs_mode`) is a variant the trivial solution cannot reach: both registers
take their angles from the context projection (the teacher side through a stop-gradient copy of it:
W_t is not a parameter), and before the tanh each angle is standardised over the batch,

    student   = pi tanh(s * std_b(W_c c_b + b_c))
    teacher   = pi tanh(s * std_b(W_c t_bk + b_c))      (W_c, b_c without gradient here)
    std_b(z)  = (z - mean_b z) / sqrt(var_b z + 1e-6)   per angle (per block k for the teacher)

with s = `angle_scale`. Every angle then varies over the batch with the same spread, so no register
can land in one state for every sample, and L_fqs = mean(1 - F) falls only by making each student
state match its own teacher's. The predictor's projection starts at zero (identity layers), so at
the start matched pairs differ only as their summaries do. A batch of one is not standardised.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hqjepa.losses.fqs import collapse_gap, fqs_loss, shuffled_pairs
from hqjepa.quantum.fidelity import check_backend, swap_test_fidelity
from hqjepa.quantum.statevector import N_QUBITS

ANGLES_PER_LAYER = N_QUBITS * 3
FQS_MODES = ("paper", "siamese")


class FQSOutput(NamedTuple):
    """What FQSHead returns: L_fqs = mean (1 - F) (scalar), the fidelities F [B, K], and the collapse gap
    mean F(matched) - mean F(shuffled pairs) (scalar, no gradient; NaN when B < 2)."""

    loss: Tensor  # scalar, L_fqs = mean(1 - F) over blocks and batch
    fidelity: Tensor  # [B, K]
    gap: Tensor  # scalar, no grad: mean F(matched) - mean F(shuffled pairs); NaN if B < 2


class FQSHead(nn.Module):
    """Projects summaries to angles and scores them with the SWAP test (see module docstring)."""

    def __init__(
        self,
        embed_dim: int,
        enc_layers: int = 2,
        pred_layers: int = 1,
        backend: str = "statevector",
        device: str = "default.qubit",
        mode: str = "paper",
        angle_scale: float = 0.5,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim: expected >= 1, got {embed_dim}")
        if enc_layers < 1:
            raise ValueError(f"enc_layers: expected >= 1, got {enc_layers}")
        if pred_layers < 0:
            raise ValueError(f"pred_layers: expected >= 0, got {pred_layers}")
        check_backend(backend)  # unknown: ValueError; PennyLane's without PennyLane: what to install
        if mode not in FQS_MODES:
            raise ValueError(f"mode: expected one of {FQS_MODES}, got {mode!r}")
        if not angle_scale > 0:
            raise ValueError(f"angle_scale: expected > 0, got {angle_scale}")
        self.embed_dim, self.enc_layers, self.pred_layers = embed_dim, enc_layers, pred_layers
        self.backend, self.device_name = backend, device
        self.mode, self.angle_scale = mode, angle_scale
        self.context_proj = nn.Linear(embed_dim, enc_layers * ANGLES_PER_LAYER)
        # siamese: the teacher reuses the context projection (no parameters of its own)
        self.target_proj = nn.Linear(embed_dim, enc_layers * ANGLES_PER_LAYER) if mode == "paper" else None
        self.query_proj = nn.Linear(embed_dim, pred_layers * ANGLES_PER_LAYER) if pred_layers else None
        if mode == "siamese" and self.query_proj is not None:
            nn.init.zeros_(self.query_proj.weight)
            nn.init.zeros_(self.query_proj.bias)

    @staticmethod
    def _angles(proj: nn.Linear, x: Tensor, layers: int) -> Tensor:
        a = math.pi * torch.tanh(proj(x))
        return FQSHead._fit(a, x, layers)

    def _standardised_angles(self, x: Tensor, teacher: bool) -> Tensor:
        """siamese: pi tanh(s * std_b(W_c x + b_c)), the teacher through W_c without gradient."""
        w, b = self.context_proj.weight, self.context_proj.bias
        z = nn.functional.linear(x, w.detach(), b.detach()) if teacher else self.context_proj(x)
        if z.dtype not in (torch.float32, torch.float64):  # autocast: standardise in float32
            z = z.float()
        if x.shape[0] >= 2:
            var, mean = torch.var_mean(z, dim=0, correction=0, keepdim=True)
            z = (z - mean) * torch.rsqrt(var + 1e-6)
        return self._fit(math.pi * torch.tanh(self.angle_scale * z), x, self.enc_layers)

    @staticmethod
    def _fit(a: Tensor, x: Tensor, layers: int) -> Tensor:
        if a.dtype not in (torch.float32, torch.float64):  # autocast: simulate in float32
            a = a.float()
        return a.reshape(*x.shape[:-1], layers, N_QUBITS, 3)

    def angles(
        self, context_summary: Tensor, target_summary: Tensor, mask_query: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(student [B, K, L_enc, 5, 3], teacher [B, K, L_enc, 5, 3], predictor [B, K, L_pred, 5, 3])."""
        self._check(context_summary, target_summary, mask_query)
        k = target_summary.shape[1]
        if self.mode == "siamese":
            student = self._standardised_angles(context_summary, teacher=False)
            teacher = self._standardised_angles(target_summary, teacher=True)
        else:
            student = self._angles(self.context_proj, context_summary, self.enc_layers)
            teacher = self._angles(self.target_proj, target_summary, self.enc_layers)
        student = student.unsqueeze(1).expand(-1, k, -1, -1, -1)
        if self.query_proj is None:
            predictor = student.new_zeros(*mask_query.shape[:2], 0, N_QUBITS, 3)
        else:
            predictor = self._angles(self.query_proj, mask_query, self.pred_layers)
        dtype = torch.promote_types(student.dtype, teacher.dtype)
        return student.to(dtype), teacher.to(dtype), predictor.to(dtype)

    def _fidelity(self, student: Tensor, teacher: Tensor, predictor: Tensor) -> Tensor:
        b, k = student.shape[:2]
        # No NaN check here: a non-finite summary (a bad pixel upstream) must give a NaN loss,
        # which the training step skips and counts, not an exception that ends the run. Shapes
        # were checked on the summaries (`_check`), so the angles fit the circuit.
        f = swap_test_fidelity(
            student.flatten(0, 1),
            teacher.flatten(0, 1),
            predictor.flatten(0, 1),
            self.backend,
            self.device_name,
            check_finite=False,
        )
        return f.view(b, k)

    def forward(self, context_summary: Tensor, target_summary: Tensor, mask_query: Tensor) -> FQSOutput:
        """context_summary [B, D], target_summary [B, K, D] (detached), mask_query [B, K, D]."""
        student, teacher, predictor = self.angles(context_summary, target_summary, mask_query)
        fidelity = self._fidelity(student, teacher, predictor)
        with torch.no_grad():
            batch = student.shape[0]
            if batch >= 2:
                perm = shuffled_pairs(batch, teacher.device)
                shuffled = self._fidelity(student, teacher[perm], predictor)
            else:
                shuffled = fidelity
            gap = collapse_gap(fidelity, shuffled)
        return FQSOutput(fqs_loss(fidelity), fidelity, gap)

    def _check(self, context_summary: Tensor, target_summary: Tensor, mask_query: Tensor) -> None:
        d = self.embed_dim
        if context_summary.dim() != 2 or context_summary.shape[1] != d:
            raise ValueError(f"context_summary: expected [B, {d}], got {list(context_summary.shape)}")
        b = context_summary.shape[0]
        if target_summary.dim() != 3 or target_summary.shape[0] != b or target_summary.shape[2] != d:
            raise ValueError(f"target_summary: expected [{b}, K, {d}], got {list(target_summary.shape)}")
        k = target_summary.shape[1]
        if tuple(mask_query.shape) != (b, k, d):
            raise ValueError(f"mask_query: expected [{b}, {k}, {d}], got {list(mask_query.shape)}")

    def extra_repr(self) -> str:
        """The head's sizes and backend, for `print(model)`."""
        return (
            f"embed_dim={self.embed_dim}, enc_layers={self.enc_layers}, "
            f"pred_layers={self.pred_layers}, backend={self.backend!r}"
            + (f", mode='siamese', angle_scale={self.angle_scale}" if self.mode == "siamese" else "")
        )
