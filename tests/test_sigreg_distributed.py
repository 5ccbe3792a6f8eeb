"""SIGReg across ranks equals SIGReg of the global batch: the statistic on every rank, and the
parameter gradient after DDP's gradient averaging (2 gloo processes).

The ranks meet through a FileStore in tmp_path and hand results back as files: no free-port probe
(another process could take the port between the probe and gloo's bind) and no
`multiprocessing.Manager` (it forks pytest, which may hold the session's Ray driver and its threads).
"""

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hqjepa.losses.sigreg import SIGReg


def _rank(rank: int, world: int, tmp: str, x: torch.Tensor, w0: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        w = w0.clone().requires_grad_(True)  # a replicated parameter, as under DDP
        stat = SIGReg(num_slices=32, seed=5)(x.chunk(world)[rank] @ w, step=11)
        stat.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)  # what DDP does: average over ranks
        torch.save((stat.detach(), grad / world), Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_statistic_and_gradient_match_the_global_batch(tmp_path: Path):
    torch.manual_seed(0)
    x, w0 = torch.randn(64, 8), torch.randn(8, 6) * 0.7
    w = w0.clone().requires_grad_(True)
    ref = SIGReg(num_slices=32, seed=5)(x @ w, step=11)
    ref.backward()
    mp.spawn(_rank, args=(2, str(tmp_path), x, w0), nprocs=2, join=True)
    for rank in range(2):
        stat, grad = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(stat, ref.detach(), rtol=1e-5)  # the global statistic, N = 64
        assert torch.allclose(grad, w.grad, rtol=1e-4, atol=1e-6)  # the global gradient
