"""The FQS simulator replayed from CUDA graphs equals the eager simulator (runs only with CUDA)."""

from __future__ import annotations

import pytest
import torch

from hqjepa.quantum import statevector as sv

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _angles(batch, l_enc, l_pred, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    make = lambda layers: torch.rand(batch, layers, 5, 3, generator=g, dtype=dtype) * 6 - 3  # noqa: E731
    return [
        make(l_enc).cuda().requires_grad_(),
        make(l_enc).cuda().requires_grad_(),
        make(l_pred).cuda().requires_grad_(),
    ]


def _run(graphs: bool, inputs, weights):
    sv.use_cuda_graphs(graphs)
    try:
        xs = [x.detach().clone().requires_grad_() for x in inputs]
        fid = sv.statevector_fidelity(*xs)
        (fid * weights).sum().backward()
        return fid.detach(), [x.grad for x in xs]
    finally:
        sv.use_cuda_graphs(None)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graphed_fidelity_equals_eager_values_and_gradients(dtype):
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    for seed in range(3):  # the first call captures, the next ones replay with new values
        inputs = _angles(64, 2, 2, dtype, seed)
        weights = torch.rand(64, dtype=dtype, device="cuda")
        ref, ref_grads = _run(False, inputs, weights)
        got, got_grads = _run(True, inputs, weights)
        torch.testing.assert_close(got, ref, **tol)
        for a, b in zip(got_grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, **tol)


@cuda
def test_a_backward_after_a_later_forward_uses_its_own_states():
    a, b = _angles(32, 2, 1, torch.float64, 1), _angles(32, 2, 1, torch.float64, 2)
    sv.use_cuda_graphs(True)
    try:
        fa = sv.statevector_fidelity(*a)
        fb = sv.statevector_fidelity(*b)  # same shapes: same graph, overwrites a's states
        (fa.sum() + 2 * fb.sum()).backward()
    finally:
        sv.use_cuda_graphs(None)
    ref_a = _run(False, a, torch.ones(32, dtype=torch.float64, device="cuda"))
    ref_b = _run(False, b, 2 * torch.ones(32, dtype=torch.float64, device="cuda"))
    torch.testing.assert_close(fa.detach(), ref_a[0])
    torch.testing.assert_close(fb.detach(), ref_b[0])
    for x, g in zip(a, ref_a[1], strict=True):
        torch.testing.assert_close(x.grad, g)
    for x, g in zip(b, ref_b[1], strict=True):
        torch.testing.assert_close(x.grad, g)


def test_cpu_tensors_never_take_the_graph_path(monkeypatch):
    monkeypatch.setenv("HQJEPA_FQS_CUDA_GRAPHS", "1")
    assert sv.cuda_graphs_enabled()
    called = []
    monkeypatch.setattr(sv._GraphedFidelity, "apply", lambda *a: called.append(a))
    x = torch.rand(4, 2, 5, 3, dtype=torch.float64)
    fid = sv.statevector_fidelity(x, x.clone(), torch.rand(4, 1, 5, 3, dtype=torch.float64))
    assert not called and fid.shape == (4,)
    monkeypatch.setenv("HQJEPA_FQS_CUDA_GRAPHS", "0")
    assert not sv.cuda_graphs_enabled()
