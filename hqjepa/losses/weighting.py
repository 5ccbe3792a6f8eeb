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
gradnorm (GradNorm's fixed point with alpha = 0, Chen et al., ICML 2018, measured on the shared
representation as MGDA-UB does, Sener & Koltun, NeurIPS 2018), no parameters: with z the student's
context tokens, which every term reaches, and G_i = EMA_0.9 || dL_i / dz ||_2 updated each step,
    w_pred(t) = 1,   w_i(t) = w_i G_pred / G_i,   so   || w_i(t) dL_i / dz || = w_i || dL_pred / dz ||:
the configured weights become each term's gradient at the encoder relative to L_pred's, whatever
the terms' scales (SIGReg's statistic is N times an integral, the FQS infidelity is bounded by 1),
and the objective keeps L_pred's units. `uncertainty` and `dwa` balance loss *values*; on this
objective the gradient norms differ by up to five orders of magnitude at comparable values (at
step 0 of the tiny recipe, SIGReg on the context tokens 206 against L_pred's 0.002, as
`experiments/grad_share.py` measures them), which only this scheme corrects. The weights are
constants in the backward pass. A term whose gradient does not reach z keeps its configured weight.
All adaptive schemes weight every enabled term, L_pred included.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

S_MIN, S_MAX = -6.0, 6.0  # weights stay within [e^-6, e^6] ~ [0.0025, 403]
TERMS = ("pred", "cm", "sig", "fqs", "sig_ctx", "pix")
SCHEMES = ("fixed", "uncertainty", "dwa", "gradnorm")
GRADNORM_EMA = 0.9  # smoothing of the per-term gradient norms (one batch's norms are noisy)


class LossWeighting(nn.Module):
    """Combines the enabled loss terms (those with a configured weight > 0) into the objective with
    one of the schemes of the module docstring: fixed, uncertainty, dwa or gradnorm.
    `applied` holds the weights the last forward used."""

    def __init__(self, scheme: str, base: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"loss weighting scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        self.scheme = scheme
        self.names = tuple(n for n in TERMS if base.get(n, 0.0) > 0)
        self.base = {n: float(base[n]) for n in self.names}
        # the configured weights as a tensor, built once; not persistent, so state_dicts are unchanged
        self.register_buffer("base_w", torch.tensor([self.base[n] for n in self.names]), persistent=False)
        self.temperature = temperature
        if scheme == "uncertainty":
            self.log_vars = nn.Parameter(torch.tensor([-math.log(self.base[n]) for n in self.names]))
        if scheme == "dwa":
            self.register_buffer("fast", torch.zeros(len(self.names)))
            self.register_buffer("slow", torch.zeros(len(self.names)))
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        if scheme == "gradnorm":
            self.register_buffer("grad_norms", torch.zeros(len(self.names)))  # G_i, 0 = not measured yet
        self.applied: dict[str, float] = dict(self.base)  # the weights the last forward used

    @property
    def needs_shared(self) -> bool:
        """Whether forward wants the shared representation z (gradnorm, while training)."""
        return self.scheme == "gradnorm" and self.training and torch.is_grad_enabled()

    def weights(self) -> dict[str, float]:
        """Current effective weight of each term (for logging)."""
        if self.scheme == "uncertainty":
            s = self.log_vars.detach().clamp(S_MIN, S_MAX)
            return {n: float(torch.exp(-s[i])) for i, n in enumerate(self.names)}
        if self.scheme == "dwa":
            return {n: float(w) for n, w in zip(self.names, self._dwa_weights(), strict=True)}
        if self.scheme == "gradnorm":
            return {n: float(w) for n, w in zip(self.names, self._gradnorm_weights(), strict=True)}
        return dict(self.base)

    def _gradnorm_weights(self) -> torch.Tensor:
        base = self.base_w
        g = self.grad_norms
        known = g > 1e-12
        if not bool(known[0]):  # the anchor (L_pred, the first term) not measured yet
            return base
        return torch.where(known, base * (g[0] / base[0]) / g.clamp_min(1e-12), base)

    def _measure(self, values: list[torch.Tensor], shared: torch.Tensor) -> None:
        """G_i <- EMA of || dL_i / dz || (averaged over ranks, so every rank weights alike).

        One partial backward per term, from the term to z only (the heads, not the encoder)."""
        norms = []
        for v in values:
            (g,) = torch.autograd.grad(v, shared, retain_graph=True, allow_unused=True)
            norms.append(torch.zeros((), device=shared.device) if g is None else g.detach().float().norm())
        g = torch.stack(norms).to(self.grad_norms.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(g)
            g /= dist.get_world_size()
        first = self.grad_norms <= 1e-12
        with torch.no_grad():
            self.grad_norms.copy_(torch.where(first, g, GRADNORM_EMA * self.grad_norms + (1 - GRADNORM_EMA) * g))

    def _dwa_weights(self) -> torch.Tensor:
        base = self.base_w
        if int(self.steps) < 20:  # averages not yet meaningful
            return base
        r = self.fast / self.slow.clamp_min(1e-12)
        return base * len(self.names) * torch.softmax(r / self.temperature, dim=0)

    def forward(self, terms: dict[str, torch.Tensor], shared: torch.Tensor | None = None) -> torch.Tensor:
        """Combine the terms named in `self.names` (each a scalar tensor) into the objective.

        `shared` is the representation every term's gradient passes through (the student's context
        tokens); gradnorm measures the terms' gradient norms on it while training, and needs it then.
        """
        values = torch.stack([terms[n].float() for n in self.names])
        if self.scheme == "fixed":
            return (self.base_w.to(values.device) * values).sum()
        if self.scheme == "uncertainty":
            s = self.log_vars.clamp(S_MIN, S_MAX)
            self.applied = dict(zip(self.names, torch.exp(-s.detach()).tolist(), strict=True))
            return (torch.exp(-s) * values + s).sum()
        if self.scheme == "gradnorm":
            if self.needs_shared:
                if shared is None:
                    raise ValueError("gradnorm weighting needs the shared representation while training")
                self._measure([terms[n] for n in self.names], shared)
            w = self._gradnorm_weights().to(values.device)
            self.applied = dict(zip(self.names, w.tolist(), strict=True))
            return (w * values).sum()
        w = self._dwa_weights().to(values.device)
        self.applied = dict(zip(self.names, w.tolist(), strict=True))
        if self.training:
            with torch.no_grad():
                v = values.detach()
                first = int(self.steps) == 0
                self.fast.copy_(v if first else 0.9 * self.fast + 0.1 * v)
                self.slow.copy_(v if first else 0.99 * self.slow + 0.01 * v)
                self.steps += 1
        return (w * values).sum()
