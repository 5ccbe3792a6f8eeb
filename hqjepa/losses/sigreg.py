"""L_sig: SIGReg (LeJEPA, Balestriero & LeCun 2025), the Epps-Pulley test against N(0, I) on
random 1-D projections, applied to the fused cross-modal block embeddings z_n in R^D.

For M unit directions a_m (re-drawn every step from a seed every rank shares) and projections
x_nm = <z_n, a_m>, the empirical characteristic function and its Gaussian target are

    phi_m(t) = 1/N sum_n exp(i t x_nm),      phi_0(t) = exp(-t^2 / 2).

The statistic integrates the squared gap against the Gaussian window w(t) = exp(-t^2 / 2):

    EP_m = N * int_R |phi_m(t) - phi_0(t)|^2 w(t) dt
         ~ N * sum_k c_k w(t_k) [(Re phi_m(t_k) - phi_0(t_k))^2 + (Im phi_m(t_k))^2],

with knots t_k on [0, t_max] and c_k the trapezoid weights doubled (the integrand is even in t).
L_sig = 1/M sum_m EP_m. N is the global number of embeddings: in a distributed run the averages
Re/Im phi_m are all-reduced across ranks with a gradient-carrying all-reduce, so every rank holds
the global batch's statistic. Its backward sums dL/dphi over ranks, so each rank's embeddings get
world x their share of the global gradient, and DDP's averaging of parameter gradients turns that
into exactly the global batch's gradient (tests/test_sigreg_distributed.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; dL/dx = sum over ranks of dL/dy (every rank's y feeds its own loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = grad.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


def _all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks that carries gradients back to every rank's inputs."""
    world = _world()
    return x if world == 1 else _AllReduceSum.apply(x) / world


class SIGReg(nn.Module):
    """L_sig, the sliced Epps-Pulley statistic of the module docstring: `num_slices` random directions
    per step (seeded by `seed` and the step), `knots` trapezoid knots on [0, t_max]."""

    def __init__(self, num_slices: int = 256, knots: int = 17, t_max: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        self.num_slices = num_slices
        self.seed = seed
        t = torch.linspace(0.0, t_max, knots)
        dt = t_max / (knots - 1)
        trapezoid = torch.full((knots,), 2.0 * dt)
        trapezoid[[0, -1]] = dt
        window = torch.exp(-0.5 * t.square())
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi0", window, persistent=False)  # N(0,1) characteristic function
        self.register_buffer("weights", trapezoid * window, persistent=False)

    def directions(self, dim: int, step: int, device: torch.device) -> torch.Tensor:
        """[dim, M] unit directions, identical on every rank for a given step."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        a = torch.randn(dim, self.num_slices, generator=g)
        return (a / a.norm(dim=0, keepdim=True)).to(device)

    def forward(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """z [N, D] -> scalar statistic (computed in float32)."""
        z = z.float()
        x = z @ self.directions(z.shape[-1], step, z.device)  # [N, M]
        xt = x.unsqueeze(-1) * self.t  # [N, M, knots]
        re = _all_reduce_mean(xt.cos().mean(0))
        im = _all_reduce_mean(xt.sin().mean(0))
        err = (re - self.phi0).square() + im.square()  # [M, knots]
        n_global = z.shape[0] * _world()
        return (err @ self.weights).mean() * n_global
