"""The statevector FQS simulator against PennyLane's QNode, closed forms and its own gradient check."""

from __future__ import annotations

import math

import pytest
import torch

from hqjepa.quantum.fidelity import swap_test_fidelity
from hqjepa.quantum.statevector import register_state


def _angles(batch: int, l_enc: int, l_pred: int, dtype=torch.float64, seed: int = 0, spread: float = 0.4):
    """Random angles where teacher = student + noise, so fidelities are spread over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    student = (torch.rand(batch, l_enc, 5, 3, generator=g, dtype=dtype) * 2 - 1) * math.pi
    teacher = student + spread * torch.randn(batch, l_enc, 5, 3, generator=g, dtype=dtype)
    predictor = spread * torch.randn(batch, l_pred, 5, 3, generator=g, dtype=dtype)
    return [x.requires_grad_() for x in (student, teacher, predictor)]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _value_and_grads(backend: str, angles, weights):
    f = swap_test_fidelity(*angles, backend=backend)
    grads = torch.autograd.grad((f * weights).sum(), angles, allow_unused=True)
    # PennyLane leaves an empty predictor (L_pred = 0) out of the graph
    return f.detach(), [torch.zeros_like(a) if g is None else g for a, g in zip(angles, grads, strict=True)]


@pytest.mark.parametrize("l_enc,l_pred", [(2, 1), (1, 0), (2, 2)])
def test_statevector_equals_pennylane_adjoint(l_enc, l_pred):
    angles = _angles(3, l_enc, l_pred, seed=l_enc * 10 + l_pred)
    weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # distinct upstream gradients
    f_sv, g_sv = _value_and_grads("statevector", angles, weights)
    f_pl, g_pl = _value_and_grads("pennylane", angles, weights)
    assert f_sv.dtype == torch.float64 and f_sv.shape == (3,)
    assert (f_sv - f_pl).abs().max() < 1e-10
    for name, a, b in zip(("student", "teacher", "predictor"), g_sv, g_pl, strict=True):
        assert a.shape == b.shape, name
        assert _maxdiff(a, b) < 1e-10, name
    # random angles and a real signal: not a trivially constant case
    assert f_pl.min() < 0.9 and f_pl.max() > 0.05
    assert all(g.abs().max() > 1e-3 for g in g_pl if g.numel())


def test_statevector_equals_pennylane_broadcast():
    angles = _angles(4, 2, 1, seed=3)
    weights = torch.tensor([0.3, 1.0, -1.0, 0.7], dtype=torch.float64)
    f_sv, g_sv = _value_and_grads("statevector", angles, weights)
    f_bc, g_bc = _value_and_grads("pennylane_broadcast", angles, weights)
    assert (f_sv - f_bc).abs().max() < 1e-10
    for a, b in zip(g_sv, g_bc, strict=True):
        assert (a - b).abs().max() < 1e-10


def test_register_state_matches_pennylane_state():
    """Pins the conventions (RY/RZ/IsingZZ signs, wire order) on the register state itself."""
    import pennylane as qml

    from hqjepa.quantum.circuit import register_layers

    angles = _angles(1, 3, 0, seed=7)[0].detach()

    @qml.qnode(qml.device("default.qubit", wires=5))
    def state(a):
        register_layers(a, (0, 1, 2, 3, 4))
        return qml.state()

    expected = torch.as_tensor(state(angles[0].numpy()))
    assert (register_state(angles)[0] - expected).abs().max() < 1e-12


def test_gradcheck_hand_written_backward():
    angles = _angles(2, 2, 1, seed=11)
    assert torch.autograd.gradcheck(lambda s, t, p: swap_test_fidelity(s, t, p), angles, fast_mode=True)


def test_interleaved_calls_keep_their_own_values_and_gradients():
    """The simulator reuses scratch buffers across calls: two forwards of different sizes before
    one backward, and a third call in between, must give what separate calls give."""
    a, b = _angles(5, 2, 1, seed=21), _angles(9, 2, 2, seed=22)
    ref = [_value_and_grads("statevector", x, torch.ones(len(x[0]), dtype=torch.float64)) for x in (a, b)]
    fa = swap_test_fidelity(*a)
    fb = swap_test_fidelity(*b)
    swap_test_fidelity(*_angles(32, 2, 1, seed=23))  # grows every scratch buffer
    ga = torch.autograd.grad(fa.sum() + fb.sum(), a + b)
    for (f_ref, g_ref), f, g in ((ref[0], fa, ga[:3]), (ref[1], fb, ga[3:])):
        assert torch.equal(f.detach(), f_ref)
        assert all(torch.allclose(x, y, rtol=0, atol=1e-14) for x, y in zip(g, g_ref, strict=True))


def test_threads_do_not_share_scratch_buffers():
    import threading

    batches = [_angles(n, 2, 1, seed=30 + n) for n in (7, 64, 300)]
    expected = [swap_test_fidelity(*x).detach() for x in batches]
    errors = []

    def work(i: int) -> None:
        for _ in range(20):
            got = swap_test_fidelity(*batches[i]).detach()
            if not torch.equal(got, expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("l_pred", [0, 1])
def test_identical_states_have_fidelity_one(dtype, l_pred):
    student = _angles(16, 2, 0, dtype=dtype, seed=5)[0].detach()
    predictor = torch.zeros(16, l_pred, 5, 3, dtype=dtype)
    f = swap_test_fidelity(student, student.clone(), predictor)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert f.dtype == dtype
    assert (f - 1).abs().max() < tol


def test_ry_only_closed_form():
    """RZ = ZZ = 0: layers are RY only and RY(a) RY(b) = RY(a + b), so each register is the product
    state (x)_q (cos(A_q/2), sin(A_q/2)) with A_q the summed RY angles of qubit q (student: its
    encoding plus predictor layers). Per qubit <s_q|t_q> = cos((A_q - B_q)/2), hence

        F = prod_q cos^2((A_q - B_q) / 2).
    """
    student, teacher, predictor = _angles(32, 2, 1, seed=9, spread=0.8)
    ry_only = [x * torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype) for x in (student, teacher, predictor)]
    a = ry_only[0][..., 0].sum(1) + ry_only[2][..., 0].sum(1)  # [B, 5]
    b = ry_only[1][..., 0].sum(1)
    closed = torch.cos((a - b) / 2).pow(2).prod(-1)
    f = swap_test_fidelity(*ry_only)
    assert (f - closed).abs().max() < 1e-12
    g_f = torch.autograd.grad(f.sum(), (student, teacher, predictor), retain_graph=True)
    g_c = torch.autograd.grad(closed.sum(), (student, teacher, predictor))
    for x, y in zip(g_f, g_c, strict=True):
        assert (x - y).abs().max() < 1e-12
    assert closed.std() > 0.05  # the check spans a range of fidelities


def test_float32_matches_float64():
    angles64 = _angles(64, 2, 1, seed=13)
    angles32 = [x.detach().float().requires_grad_() for x in angles64]
    f64, g64 = _value_and_grads("statevector", angles64, torch.ones(64, dtype=torch.float64))
    f32, g32 = _value_and_grads("statevector", angles32, torch.ones(64))
    assert f32.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g32)
    assert (f32.double() - f64).abs().max() < 1e-5
    for a, b in zip(g32, g64, strict=True):
        assert (a.double() - b).abs().max() < 1e-4


def test_autocast_keeps_full_precision():
    angles = _angles(8, 2, 1, dtype=torch.float32, seed=17)
    ref = swap_test_fidelity(*angles)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = swap_test_fidelity(*angles)
    assert f.dtype == torch.float32
    assert (f - ref).abs().max() < 1e-6
    f.sum().backward()
    assert angles[0].grad is not None and angles[0].grad.dtype == torch.float32


def test_empty_batch():
    s, t, p = (torch.zeros(0, 2, 5, 3, requires_grad=True), torch.zeros(0, 2, 5, 3), torch.zeros(0, 1, 5, 3))
    f = swap_test_fidelity(s, t, p)
    assert f.shape == (0,)
    f.sum().backward()
    assert s.grad.shape == s.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    angles = _angles(32, 2, 1, seed=19)
    f_cpu, g_cpu = _value_and_grads("statevector", angles, torch.ones(32, dtype=torch.float64))
    angles_cuda = [x.detach().cuda().requires_grad_() for x in angles]
    f, g = _value_and_grads("statevector", angles_cuda, torch.ones(32, dtype=torch.float64, device="cuda"))
    assert f.device.type == "cuda"
    assert (f.cpu() - f_cpu).abs().max() < 1e-12
    for a, b in zip(g, g_cpu, strict=True):
        assert (a.cpu() - b).abs().max() < 1e-12


def test_pennylane_device_is_configurable():
    """The reference runs on another PennyLane device by name (lightning.qubit ships with
    PennyLane; skipped where the plugin is missing)."""
    import pennylane as qml

    try:
        qml.device("lightning.qubit", wires=11)
    except Exception:  # plugin not installed
        pytest.skip("lightning.qubit not installed")
    angles = _angles(2, 2, 1, seed=23)
    f_sv = swap_test_fidelity(*angles)
    f_lq = swap_test_fidelity(*angles, backend="pennylane", device="lightning.qubit")
    # lightning's C++ kernels agree with default.qubit to ~1e-9 here, not to the last bit
    assert (f_sv - f_lq).abs().max() < 1e-8
    g_sv = torch.autograd.grad(f_sv.sum(), angles)
    g_lq = torch.autograd.grad(f_lq.sum(), angles)
    for a, b in zip(g_sv, g_lq, strict=True):
        assert _maxdiff(a, b) < 1e-8
