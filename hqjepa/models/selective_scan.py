"""Mamba's selective scan in pure PyTorch: a chunked (blocked) scan and its sequential reference.

The recurrence, per batch b, channel d and state n (Mamba-1, real A, Gu & Dao 2023, Alg. 2):

    delta_t = softplus(delta_t + delta_bias)          (bias and softplus optional)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * u_t * B_t[n],     h_{-1} = 0
    y_t     = sum_n C_t[n] * h_t[n]  +  D[d] * u_t
    out_t   = y_t * silu(z_t)                          (gate optional)

Both functions take the arguments of `mamba_ssm.ops.selective_scan_interface.selective_scan_ref`
with the same shapes and meaning: u, delta, z: [batch, d_inner, L]; A: [d_inner, d_state];
B, C: [batch, d_state, L], or [batch, groups, d_state, L] (channels split into `groups` equal
blocks, each with its own B/C), or [d_inner, d_state] (time-invariant); D, delta_bias: [d_inner].
Like the reference, low-precision inputs are computed in float32 and the result is cast back;
unlike it, float64 stays float64 (so the two paths can be compared to 1e-6).

Why a hand-written scan instead of a library: mamba-ssm's kernels need CUDA, and `mambapy`'s
pscan (Blelloch, in-place, power-of-two padding) keeps several [batch, d_inner, L, d_state]
tensors alive for autograd. `selective_scan` is a blocked (three-phase) scan with its own
backward that keeps only its inputs and one state per chunk (as the CUDA kernel does, it
recomputes the states in its backward):

  1. L is cut into chunks of T tokens (T ~ sqrt(L)); the decays a_t = exp(delta_t A) of a batch
     block are computed in one pass.
  2. One loop over the T positions, vectorised over all chunks at once, scans every chunk from
     a zero state, giving each chunk's end state and total decay prod_t a_t; a loop over the
     L/T chunks chains them into the state entering each chunk.
  3. A second loop over the T positions runs the recurrence from those carried-in states and
     contracts with C.

Every step multiplies by decays a_t <= 1 (delta >= 0, A < 0) and never exponentiates a sum or
a difference of log-decays, so float32 cannot overflow: decays that underflow to 0 are the true
value to float precision. The Python loops are 2T + L/T steps long (about 3 sqrt(L): 36 for
L = 144), each step working on one token of every chunk (L/T tokens) at once. The backward runs
the same phases in reverse for the adjoint state g_t = C_t dy_t + a_{t+1} g_{t+1}. Work is split
into batch blocks so the two [block, d_inner, L, d_state] buffers stay cache-sized and peak
memory stays small.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["selective_scan", "selective_scan_sequential"]

# Default size (elements) of each of the two [block, d_inner, L, d_state] buffers: on a CPU,
# 2**21 float32 = 8 MiB, so both fit in a server L3 (measured fastest of 2**19..2**23 here); on a
# GPU, large blocks, because there each op costs a kernel launch.
BLOCK_ELEMS_CPU = 2**21
BLOCK_ELEMS_GPU = 2**27


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    chunk_size: int | None = None,
    block_elems: int | None = None,
) -> Tensor:
    """Selective scan, vectorised (chunked) with a memory-light custom backward.

    Same semantics as `selective_scan_ref` (see the module docstring); returns [batch, d_inner, L].
    `chunk_size` (tokens per chunk, default about sqrt(L)) and `block_elems` (size of the
    per-batch-block buffers, default by device) only trade speed for memory; results do not
    depend on them beyond rounding.
    """
    u_, delta_, A_, B_, C_, dtype_in = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    L = u_.shape[-1]
    T = chunk_size if chunk_size is not None else max(1, math.ceil(math.sqrt(L)))
    if T < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if block_elems is None:
        block_elems = BLOCK_ELEMS_GPU if u_.is_cuda else BLOCK_ELEMS_CPU
    y = _ChunkedScan.apply(u_, delta_, A_, B_, C_, T, block_elems)
    return _finish(y, u_, D, z, dtype_in)


def selective_scan_sequential(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Reference: the recurrence as a plain loop over L, differentiated by autograd."""
    u_, delta_, A_, B_, C_, dtype_in = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, L = u_.shape
    G, N = B_.shape[1], A_.shape[1]
    A4 = A_.view(G, d // G, N)
    # unbind, not indexing: each index's backward would fill a whole [.., L] gradient (O(L^2)).
    us, ds = u_.view(b, G, d // G, L).unbind(-1), delta_.view(b, G, d // G, L).unbind(-1)
    Bs, Cs = B_.unbind(-1), C_.unbind(-1)  # [b, G, N] each
    h = u_.new_zeros(b, G, d // G, N)
    ys = []
    for t in range(L):
        dt = ds[t].unsqueeze(-1)
        h = torch.exp(dt * A4) * h + (dt * us[t].unsqueeze(-1)) * Bs[t].unsqueeze(2)
        ys.append((h * Cs[t].unsqueeze(2)).sum(-1).reshape(b, d))
    y = torch.stack(ys, dim=-1) if L > 0 else u_.new_zeros(b, d, 0)
    return _finish(y, u_, D, z, dtype_in)


# ----------------------------------------------------------------------------------------------
# Shared input handling: every step except the scan itself, so the two paths cannot drift.


def _prepare(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, delta_bias: Tensor | None, delta_softplus: bool
):
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, d_inner, L], got shape {tuple(u.shape)}")
    b, d, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.is_complex():
        raise NotImplementedError("complex A (S4D-Lin) is not supported: Mamba uses real A")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be [d_inner={d}, d_state], got {tuple(A.shape)}")
    N = A.shape[1]
    dtype_in = u.dtype
    # Like the reference, compute in at least float32; keep float64 when it is given.
    cdt = torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    u, delta, A = u.to(cdt), delta.to(cdt), A.to(cdt)
    if delta_bias is not None:
        if delta_bias.shape != (d,):
            raise ValueError(f"delta_bias must be [d_inner={d}], got {tuple(delta_bias.shape)}")
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, _as_groups(B, "B", b, d, N, L, cdt), _as_groups(C, "C", b, d, N, L, cdt), dtype_in


def _as_groups(M: Tensor, name: str, b: int, d: int, N: int, L: int, cdt: torch.dtype) -> Tensor:
    """B or C as [batch, groups, d_state, L]."""
    if M.is_complex():
        raise NotImplementedError(f"complex {name} is not supported")
    if M.dim() == 2 and M.shape == (d, N):  # time-invariant: one group per channel
        return M.to(cdt)[None, :, :, None].expand(b, d, N, L)
    if M.dim() == 3 and M.shape == (b, N, L):
        return M.to(cdt)[:, None]
    if M.dim() == 4 and M.shape[0] == b and M.shape[2:] == (N, L) and M.shape[1] >= 1 and d % M.shape[1] == 0:
        return M.to(cdt)
    raise ValueError(
        f"{name} must be [batch={b}, d_state={N}, L={L}], [batch, groups, d_state, L] "
        f"with groups dividing d_inner={d}, or [d_inner, d_state]; got {tuple(M.shape)}"
    )


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in) -> Tensor:
    if D is not None:
        if D.shape != (u.shape[1],):
            raise ValueError(f"D must be [d_inner={u.shape[1]}], got {tuple(D.shape)}")
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        if z.shape != u.shape:
            raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


# ----------------------------------------------------------------------------------------------
# The chunked scan. Internal layout: a token l = k*T + j (chunk k, position j) of channel
# d = g*H + i lives at [b, g, i, j, k] (per-token tensors) or [b, g, i, j, k, n] (states), so
# that the per-position slices [..., j, :, :] touched by the loops hold all chunks contiguously.


class _ChunkedScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) without D, z; B, C as [b, G, N, L]; returns [b, d_inner, L]."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, T: int, block_elems: int):
        lay = _Layout(u, B, A, T, block_elems)
        ut, dt, Bt, Ct = lay.tok(u), lay.tok(delta), lay.bc(B), lay.bc(C)
        A5 = A.reshape(1, lay.G, lay.H, 1, lay.N)  # broadcasts over [b,g,i,k,n]
        y = ut.new_empty(ut.shape)
        h0 = ut.new_empty(lay.b, lay.G, lay.H, lay.nc, lay.N)  # state entering each chunk
        a_buf = lay.block_buffer(ut)
        for s in lay.blocks():
            du, a = dt[s] * ut[s], _decays(dt[s], A5, out=a_buf[: s.stop - s.start])
            h0[s] = _carry_in(a, du, Bt[s])
            _scan_positions(h0[s].clone(), a, du, Bt[s], C=Ct[s], y=y[s])
        ctx.save_for_backward(u, delta, A, B, C, h0)
        ctx.T, ctx.block_elems = T, block_elems
        return lay.untok(y)

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx, gy):
        u, delta, A, B, C, h0 = ctx.saved_tensors
        lay = _Layout(u, B, A, ctx.T, ctx.block_elems)
        ut, dt, Bt, Ct, gyt = lay.tok(u), lay.tok(delta), lay.bc(B), lay.bc(C), lay.tok(gy.to(u.dtype))
        A5 = A.reshape(1, lay.G, lay.H, 1, lay.N)
        gu, gdt = torch.empty_like(ut), torch.empty_like(dt)
        gB, gC = torch.empty_like(Bt), torch.empty_like(Ct)
        gA = torch.zeros_like(A5[0, :, :, 0])  # [G, H, N]
        a_buf, states_buf = lay.block_buffer(ut), lay.block_buffer(ut)
        for s in lay.blocks():
            n = s.stop - s.start
            _backward_block(
                dt[s],
                ut[s],
                Bt[s],
                Ct[s],
                gyt[s],
                h0[s],
                A5,
                gu[s],
                gdt[s],
                gB[s],
                gC[s],
                gA,
                a_buf[:n],
                states_buf[:n],
            )
        gB_, gC_ = lay.unbc(gB), lay.unbc(gC)
        return (lay.untok(gu), lay.untok(gdt), gA.reshape(A.shape), gB_, gC_, None, None)


class _Layout:
    """Shapes, padding and batch blocks of the chunked layout."""

    def __init__(self, u: Tensor, B: Tensor, A: Tensor, T: int, block_elems: int):
        self.b, self.d, self.L = u.shape
        self.G, self.N = B.shape[1], A.shape[1]
        self.H = self.d // self.G
        self.T = min(T, max(self.L, 1))
        self.nc = max(1, math.ceil(self.L / self.T))
        self.Lp = self.nc * self.T
        per_sample = self.d * self.Lp * self.N
        self.bb = max(1, min(self.b, block_elems // max(per_sample, 1)))

    def block_buffer(self, like: Tensor) -> Tensor:
        """[bb, G, H, T, nc, N], allocated once per call and reused by every batch block."""
        return like.new_empty(self.bb, self.G, self.H, self.T, self.nc, self.N)

    def blocks(self):
        for i in range(0, self.b, self.bb):
            yield slice(i, min(i + self.bb, self.b))

    def tok(self, x: Tensor) -> Tensor:  # [b, d, L] -> [b, G, H, T, nc]; zeros pad the end
        x = F.pad(x, (0, self.Lp - self.L))
        return x.view(self.b, self.G, self.H, self.nc, self.T).transpose(3, 4).contiguous()

    def untok(self, x: Tensor) -> Tensor:  # inverse of tok
        return x.transpose(3, 4).reshape(self.b, self.d, self.Lp)[..., : self.L]

    def bc(self, x: Tensor) -> Tensor:  # [b, G, N, L] -> [b, G, T, nc, N]
        x = F.pad(x, (0, self.Lp - self.L))
        return x.view(self.b, self.G, self.N, self.nc, self.T).permute(0, 1, 4, 3, 2).contiguous()

    def unbc(self, x: Tensor) -> Tensor:  # inverse of bc
        return x.permute(0, 1, 4, 3, 2).reshape(self.b, self.G, self.N, self.Lp)[..., : self.L]


def _decays(dt: Tensor, A5: Tensor, out: Tensor) -> Tensor:
    """a_t = exp(delta_t A) for a block, [b, G, H, T, nc, N]: the block's one exp pass (exp is
    the costliest op here; everything else is multiply-adds on cache-sized slices)."""
    return torch.mul(dt.unsqueeze(-1), A5.unsqueeze(3), out=out).exp_()


def _carry_in(a: Tensor, du: Tensor, Bt: Tensor) -> Tensor:
    """State entering each chunk, [b, G, H, nc, N] (zero for the first chunk).

    Each chunk's own end state (scanned from zero) and total decay prod_j a_j come from one
    loop over the T positions of all chunks at once; a loop over the chunks (L/T steps)
    chains them: h0_{k+1} = decay_k h0_k + h_end_k.
    """
    h_end = torch.zeros_like(a[:, :, :, 0])
    decay = torch.ones_like(h_end)
    for j in range(a.shape[3]):
        h_end.mul_(a[:, :, :, j]).addcmul_(du[:, :, :, j].unsqueeze(-1), Bt[:, :, j].unsqueeze(2))
        decay.mul_(a[:, :, :, j])
    h0 = torch.zeros_like(h_end)
    for k in range(1, h_end.shape[3]):
        torch.addcmul(h_end[:, :, :, k - 1], decay[:, :, :, k - 1], h0[:, :, :, k - 1], out=h0[:, :, :, k])
    return h0


def _scan_positions(
    h: Tensor,
    a: Tensor,
    du: Tensor,
    Bt: Tensor,
    *,
    C: Tensor | None = None,
    y: Tensor | None = None,
    states: Tensor | None = None,
) -> None:
    """Run h_t = a_t h_{t-1} + du_t B_t over the T positions of every chunk at once, starting
    from the carried-in states h. Writes y_t = <h_t, C_t> into y (then h is updated in place),
    or h_t into states [b,G,H,T,nc,N] (then h is left as it is)."""
    for j in range(a.shape[3]):
        if states is not None:
            h = torch.mul(a[:, :, :, j], h, out=states[:, :, :, j])
        else:
            h.mul_(a[:, :, :, j])
        h.addcmul_(du[:, :, :, j].unsqueeze(-1), Bt[:, :, j].unsqueeze(2))
        if y is not None:
            torch.sum(h * C[:, :, j].unsqueeze(2), -1, out=y[:, :, :, j])


def _backward_block(dt, ut, Bt, Ct, gyt, h0, A5, gu, gdt, gB, gC, gA, a_buf, states) -> None:
    """Gradients for one batch block (outputs written in place; gA accumulated).

    With h_t the states, a_t = exp(delta_t A), x_t = du_t B_t and g_t = dL/dh_t =
    C_t gy_t + a_{t+1} g_{t+1}:
      dL/dC_t = sum_i h_t gy_t,   dL/dB_t = sum_i g_t du_t,   dL/du_t = delta_t <g_t, B_t>,
      dL/ddelta_t = u_t <g_t, B_t> + <q_t, A>,   dL/dA = sum_{b,t} q_t delta_t,
    where q_t = g_t * a_t h_{t-1} = g_t * (h_t - x_t) (i sums the channels of a group).
    """
    du = dt * ut
    a = _decays(dt, A5, out=a_buf)
    _scan_positions(h0, a, du, Bt, states=states)

    # g carried into each chunk from the right: G_k = S_{k+1} + P_{k+1} G_{k+1}, with
    # S_m = sum_j (a_1 ... a_j) gy_j C_j over chunk m and P_m = a_1 ... a_T its total decay.
    P = torch.ones_like(h0)
    S = torch.zeros_like(h0)
    for j in range(a.shape[3]):
        P.mul_(a[:, :, :, j])
        S.addcmul_(P * gyt[:, :, :, j].unsqueeze(-1), Ct[:, :, j].unsqueeze(2))
    g_in = torch.zeros_like(S)
    for k in range(g_in.shape[3] - 2, -1, -1):
        torch.addcmul(S[:, :, :, k + 1], P[:, :, :, k + 1], g_in[:, :, :, k + 1], out=g_in[:, :, :, k])

    g = g_in
    qdt = torch.zeros_like(g)  # sum_j q_j delta_j, for dL/dA
    for j in range(a.shape[3] - 1, -1, -1):
        if j < a.shape[3] - 1:
            g.mul_(a[:, :, :, j + 1])
        g.addcmul_(gyt[:, :, :, j].unsqueeze(-1), Ct[:, :, j].unsqueeze(2))
        h = states[:, :, :, j]
        B_j, du_j = Bt[:, :, j].unsqueeze(2), du[:, :, :, j]
        torch.sum(h * gyt[:, :, :, j].unsqueeze(-1), 2, out=gC[:, :, j])
        torch.sum(g * du_j.unsqueeze(-1), 2, out=gB[:, :, j])
        gBd = (g * B_j).sum(-1)  # <g_t, B_t>
        q = torch.addcmul(h, du_j.unsqueeze(-1), B_j, value=-1.0).mul_(g)
        torch.mul(dt[:, :, :, j], gBd, out=gu[:, :, :, j])
        torch.addcmul((q * A5).sum(-1), ut[:, :, :, j], gBd, out=gdt[:, :, :, j])
        qdt.addcmul_(q, dt[:, :, :, j].unsqueeze(-1))
    gA += qdt.sum((0, 3))
