"""SIGReg across ranks equals SIGReg of the global batch: the statistic on every rank, and the
parameter gradient after DDP's gradient averaging (2 gloo processes)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hqjepa.losses.sigreg import SIGReg


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, x: torch.Tensor, w0: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        w = w0.clone().requires_grad_(True)                    # a replicated parameter, as under DDP
        stat = SIGReg(num_slices=32, seed=5)(x.chunk(world)[rank] @ w, step=11)
        stat.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)                                  # what DDP does: average over ranks
        out[rank] = (stat.detach(), grad / world)
    finally:
        dist.destroy_process_group()


def test_distributed_statistic_and_gradient_match_the_global_batch():
    torch.manual_seed(0)
    x, w0 = torch.randn(64, 8), torch.randn(8, 6) * 0.7
    w = w0.clone().requires_grad_(True)
    ref = SIGReg(num_slices=32, seed=5)(x @ w, step=11)
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(2, _port(), x, w0, out), nprocs=2, join=True)
    for rank in range(2):
        stat, grad = out[rank]
        assert torch.allclose(stat, ref.detach(), rtol=1e-5)          # the global statistic, N = 64
        assert torch.allclose(grad, w.grad, rtol=1e-4, atol=1e-6)     # the global gradient
