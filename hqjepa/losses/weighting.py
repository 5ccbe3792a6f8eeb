"""How the loss terms combine into the objective: fixed or adaptive weights.

fixed (the paper):
    L = L_pred + w_cm L_cm + w_sig L_sig + w_fqs L_fqs

uncertainty (Kendall, Gal & Cipolla, CVPR 2018, homoscedastic task uncertainty), one learned
log-variance s_i per term:
    L = sum_i exp(-s_i) L_i + s_i,    s_i initialised to -log w_i (w_pred = 1),
so training starts at the fixed weighting and each term's weight drifts towards 1 / L_i. s_i is
clamped to [S_MIN, S_MAX], so a term that reaches zero (the FQS infidelity can) cannot drive its
weight to infinity.

dwa (Dynamic Weight Average, Liu, Johns & Davison, CVPR 2019), no parameters:
    r_i = Lbar_i(fast) / Lbar_i(slow),   w_i(t) = w_i * n * softmax_i(r_i / T),
with exponential moving averages of each term (fast: 0.9, slow: 0.99 per step) standing in for
the paper's per-epoch averages, so a term whose loss stalls gets relatively more weight.
Both adaptive schemes weight every enabled term, L_pred included.
"""

from __future__ import annotations

import math

import torch
from torch import nn

S_MIN, S_MAX = -6.0, 6.0  # weights stay within [e^-6, e^6] ~ [0.0025, 403]
TERMS = ("pred", "cm", "sig", "fqs", "sig_ctx", "pix")


class LossWeighting(nn.Module):
    def __init__(self, scheme: str, base: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__()
        if scheme not in ("fixed", "uncertainty", "dwa"):
            raise ValueError(f"loss weighting scheme must be fixed, uncertainty or dwa, got {scheme!r}")
        self.scheme = scheme
        self.names = tuple(n for n in TERMS if base.get(n, 0.0) > 0)
        self.base = {n: float(base[n]) for n in self.names}
        self.temperature = temperature
        if scheme == "uncertainty":
            self.log_vars = nn.Parameter(torch.tensor([-math.log(self.base[n]) for n in self.names]))
        if scheme == "dwa":
            self.register_buffer("fast", torch.zeros(len(self.names)))
            self.register_buffer("slow", torch.zeros(len(self.names)))
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self) -> dict[str, float]:
        """Current effective weight of each term (for logging)."""
        if self.scheme == "uncertainty":
            s = self.log_vars.detach().clamp(S_MIN, S_MAX)
            return {n: float(torch.exp(-s[i])) for i, n in enumerate(self.names)}
        if self.scheme == "dwa":
            return {n: float(w) for n, w in zip(self.names, self._dwa_weights())}
        return dict(self.base)

    def _dwa_weights(self) -> torch.Tensor:
        base = torch.tensor([self.base[n] for n in self.names], device=self.fast.device)
        if int(self.steps) < 20:  # averages not yet meaningful
            return base
        r = self.fast / self.slow.clamp_min(1e-12)
        return base * len(self.names) * torch.softmax(r / self.temperature, dim=0)

    def forward(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Combine the terms named in `self.names` (each a scalar tensor) into the objective."""
        values = torch.stack([terms[n].float() for n in self.names])
        if self.scheme == "fixed":
            w = torch.tensor([self.base[n] for n in self.names], device=values.device)
            return (w * values).sum()
        if self.scheme == "uncertainty":
            s = self.log_vars.clamp(S_MIN, S_MAX)
            return (torch.exp(-s) * values + s).sum()
        w = self._dwa_weights().to(values.device)
        if self.training:
            with torch.no_grad():
                v = values.detach()
                first = int(self.steps) == 0
                self.fast.copy_(v if first else 0.9 * self.fast + 0.1 * v)
                self.slow.copy_(v if first else 0.99 * self.slow + 0.01 * v)
                self.steps += 1
        return (w * values).sum()
