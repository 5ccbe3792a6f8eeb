"""The Mamba mixer (Gu & Dao 2023) and the bidirectional mixer of the hybrid encoder.

`Mamba` carries exactly the parameters of `mamba_ssm.modules.mamba_simple.Mamba` (names, shapes,
initialisation, `_no_reinit` / `_no_weight_decay` marks), so one state dict loads into both. Per
token sequence x [B, L, d_model]:

    x', z    = split(in_proj(x))                     d_inner = expand * d_model each
    x'       = silu(causal_depthwise_conv1d(x'))     kernel d_conv
    dt, B, C = split(x_proj(x'))                     dt_rank, d_state, d_state
    delta    = softplus(dt_proj(dt))                 (the bias is dt_proj.bias)
    y        = selective_scan(x', delta, A=-exp(A_log), B, C, D) * silu(z)
    out      = out_proj(y)

Backends: "cuda" runs upstream's fused kernels (`selective_scan_fn` from mamba-ssm, and
`causal_conv1d_fn` when causal-conv1d is installed); "torch" runs
`hqjepa.models.selective_scan.selective_scan` and F.conv1d; "auto" picks "cuda" when the input is
on a GPU and mamba-ssm imports. Both backends share every step except those two calls. We do not
use upstream's `mamba_inner_fn` (which fuses the whole block) because padding masks must act
between the convolution and the scan.

Padding: sequences are padded at the end; `valid` [B, L] marks real tokens. The mixer input is
zeroed at pads (so is in_proj's output, even with a bias), and so is x' after conv + SiLU, so
delta * x' * B adds nothing to the state there: trailing pads cannot reach earlier tokens (the
scan and conv are causal) and leading pads (a reversed sequence) leave the state and the conv
window exactly zero, as if the sequence started at its first real token. Outputs at pads are 0.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from torch import Tensor

from hqjepa.models.selective_scan import selective_scan

__all__ = ["Mamba", "BiMamba"]

BACKENDS = ("auto", "torch", "cuda")


@functools.cache
def _cuda_kernels():
    """(selective_scan_fn, causal_conv1d_fn or None), or the import error as a string.

    Imported lazily: mamba-ssm cannot even be imported without CUDA and triton."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as e:  # ImportError, or CUDA/triton initialisation errors
        return f"{type(e).__name__}: {e}"
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
    return selective_scan_fn, causal_conv1d_fn


class Mamba(nn.Module):
    """Mamba mixer with mamba_simple.Mamba's parameters; see the module docstring.

    Arguments as upstream, plus `backend` ("auto" | "torch" | "cuda"). Upstream's
    `use_fast_path` and `layer_idx` (step-by-step decoding cache) are not needed here.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        # Same modules, created in the same order as upstream, so a seeded init matches it too.
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory_kwargs)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory_kwargs,
        )
        self.activation = "silu"
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)

        # dt_proj keeps the variance of dt at init.
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        # Bias such that softplus(bias) = dt ~ log-uniform in [dt_min, dt_max]; inverse softplus
        # dt + log(-expm1(-dt)) (pytorch/pytorch#72759).
        dt = torch.exp(
            torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # a global "zero all biases" init must skip it

        # S4D-real: A[:, n] = -(n + 1), stored as A_log = log(n + 1), fp32.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # skip connection, fp32
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def forward(self, hidden_states: Tensor, valid: Tensor | None = None) -> Tensor:
        """hidden_states [B, L, d_model], valid [B, L] bool (True = real token) -> [B, L, d_model]."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden_states must be [batch, L, d_model={self.d_model}], got {tuple(hidden_states.shape)}"
            )
        b, L, _ = hidden_states.shape
        pad = None
        if valid is not None:
            if valid.shape != (b, L) or valid.dtype != torch.bool:
                raise ValueError(
                    f"valid must be a bool tensor [batch={b}, L={L}], got {valid.dtype} {tuple(valid.shape)}"
                )
            pad = ~valid
            hidden_states = hidden_states.masked_fill(pad[..., None], 0.0)
        use_cuda = self._use_cuda(hidden_states)

        # "b l d -> d (b l)" matmul then "d (b l) -> b d l", as upstream: L is the unit stride,
        # which is what the CUDA kernels want.
        xz = (self.in_proj.weight @ hidden_states.reshape(b * L, -1).t()).view(-1, b, L).transpose(0, 1)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
            if pad is not None:
                xz = xz.masked_fill(pad[:, None, :], 0.0)
        x, z = xz.chunk(2, dim=1)
        x = self._conv_silu(x, use_cuda)
        if pad is not None:
            x = x.masked_fill(pad[:, None, :], 0.0)

        x_dbl = self.x_proj(x.transpose(1, 2).reshape(b * L, self.d_inner))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).view(self.d_inner, b, L).transpose(0, 1)
        B = B.view(b, L, self.d_state).transpose(1, 2).contiguous()
        C = C.view(b, L, self.d_state).transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        scan = _cuda_kernels()[0] if use_cuda else selective_scan
        y = scan(x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        out = self.out_proj(y.transpose(1, 2))
        if pad is not None:
            out = out.masked_fill(pad[..., None], 0.0)
        return out

    def _use_cuda(self, x: Tensor) -> bool:
        if self.backend == "torch" or (self.backend == "auto" and not x.is_cuda):
            return False  # never import mamba-ssm for CPU tensors
        kernels = _cuda_kernels()
        if self.backend == "cuda":
            if isinstance(kernels, str):
                raise RuntimeError(
                    "Mamba(backend='cuda') needs the mamba-ssm CUDA kernels, which did "
                    f"not import ({kernels}); install them with "
                    "`pip install 'hqjepa[gpu]'` on a CUDA machine, or use backend='torch'"
                )
            if not x.is_cuda:
                raise RuntimeError(
                    f"Mamba(backend='cuda') got a tensor on {x.device}; move it to a GPU or use backend='torch'/'auto'"
                )
            return True
        return x.is_cuda and not isinstance(kernels, str)

    def _conv_silu(self, x: Tensor, use_cuda: bool) -> Tensor:
        """Causal depthwise conv over L, then SiLU. x [B, d_inner, L]."""
        if use_cuda and _cuda_kernels()[1] is not None:
            return _cuda_kernels()[1](
                x=x, weight=self.conv1d.weight.squeeze(1), bias=self.conv1d.bias, activation=self.activation
            )
        return self.act(self.conv1d(x)[..., : x.shape[-1]])

    def extra_repr(self) -> str:
        """The mixer's sizes and scan backend, for `print(model)`."""
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"expand={self.expand}, dt_rank={self.dt_rank}, backend={self.backend!r}"
        )


class BiMamba(nn.Module):
    """Bidirectional mixer: out = fwd(x) + flip(bwd(flip(x))), flip reversing the tokens.

    Two independent `Mamba` mixers named `fwd` and `bwd` (each loads an upstream Mamba state
    dict). The directions are summed, as in Vision Mamba's bidirectional block with
    `if_devide_out=False` (its released "div2" models take the mean instead); each direction has
    its own out_proj, so a constant factor is absorbed by the weights, and the sum keeps each
    direction's output at its single-direction scale. With end-padding, flipping the whole
    padded sequence puts the pads first, which the masking in `Mamba` makes exact.
    Arguments: d_model and any `Mamba` keyword (d_state, d_conv, expand, backend, ...).
    """

    def __init__(self, d_model: int, **mamba_kwargs) -> None:
        super().__init__()
        self.fwd = Mamba(d_model, **mamba_kwargs)
        self.bwd = Mamba(d_model, **mamba_kwargs)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x [B, L, d_model], valid [B, L] bool -> [B, L, d_model]."""
        back = self.bwd(x.flip(1), None if valid is None else valid.flip(1)).flip(1)
        return self.fwd(x, valid) + back
