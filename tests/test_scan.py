"""The chunked selective scan against the sequential reference (values and gradients)."""

import pytest
import torch

from hqjepa.models.selective_scan import selective_scan, selective_scan_sequential


def _inputs(b=2, d=6, n=4, L=7, groups=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=dtype) * scale).requires_grad_()

    bc = (b, n, L) if groups is None else (b, groups, n, L)
    return dict(
        u=r(b, d, L),
        delta=r(b, d, L, scale=0.7),
        A=(-torch.rand(d, n, generator=g, dtype=dtype) * 3 - 0.1).requires_grad_(),
        B=r(*bc),
        C=r(*bc),
        D=r(d),
        z=r(b, d, L),
        delta_bias=r(d, scale=0.5),
    )


def _run(fn, ins, use, softplus, **kw):
    args = {k: ins[k] for k in ("u", "delta", "A", "B", "C")}
    args.update({k: ins[k] for k in use})
    out = fn(**args, delta_softplus=softplus, **kw)
    gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    leaves = list(args.values())
    return out, torch.autograd.grad(out, leaves, gy), list(args)


OPTIONS = [
    ((), False),
    (("D",), True),
    (("z",), True),
    (("D", "z", "delta_bias"), True),
    (("D", "z", "delta_bias"), False),
]


@pytest.mark.parametrize("L", [1, 7, 144, 200])
@pytest.mark.parametrize("use,softplus", OPTIONS)
def test_scan_matches_sequential_float64(L, use, softplus):
    ins = _inputs(L=L)
    if not softplus:  # keep delta >= 0 as Mamba does (softplus), or the reference itself blows up
        ins["delta"] = ins["delta"].detach().abs().requires_grad_()
    y_ref, g_ref, names = _run(selective_scan_sequential, ins, use, softplus)
    y, g, _ = _run(selective_scan, ins, use, softplus)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    for name, a, b in zip(names, g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize(
    "L,chunk,block", [(144, 1, 10**9), (144, 16, 1), (200, 7, 2000), (13, 13, 1), (13, 500, 1), (50, 8, 6 * 56 * 4 * 2)]
)
def test_scan_chunking_and_batch_blocks_do_not_change_results(L, chunk, block):
    ins = _inputs(b=3, L=L)
    use = ("D", "z", "delta_bias")
    y_ref, g_ref, _ = _run(selective_scan_sequential, ins, use, True)
    y, g, _ = _run(selective_scan, ins, use, True, chunk_size=chunk, block_elems=block)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["groups", "time_invariant"])
def test_scan_grouped_and_time_invariant_B_C(form):
    d, n, L = 6, 4, 30
    ins = _inputs(d=d, n=n, L=L, groups=3 if form == "groups" else None)
    if form == "time_invariant":  # reference's c(D N) form
        g = torch.Generator().manual_seed(3)
        ins["B"] = torch.randn(d, n, generator=g, dtype=torch.float64).requires_grad_()
        ins["C"] = torch.randn(d, n, generator=g, dtype=torch.float64).requires_grad_()
    use = ("D", "z")
    y_ref, g_ref, _ = _run(selective_scan_sequential, ins, use, True)
    y, g, _ = _run(selective_scan, ins, use, True, chunk_size=4)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_scan_custom_backward_passes_gradcheck():
    ins = _inputs(b=2, d=2, n=3, L=9, groups=2)
    args = [ins[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def f(*a):
        return selective_scan(*a[:5], D=a[5], z=a[6], delta_bias=a[7], delta_softplus=True, chunk_size=4)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def test_scan_float32_extreme_decays_stay_finite():
    """Decays exp(delta*A) spanning 1 - 1e-10 .. exactly 0 (underflow) must not give inf/NaN."""
    b, d, n, L = 2, 8, 16, 144
    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, L, generator=g)
    # per channel: delta from 1e-9 to 1e4, alternating along L so chunks mix both regimes
    scale = torch.logspace(-9, 4, d)[:, None] * torch.where(torch.arange(L) % 3 == 0, 1.0, 1e-3)
    delta = (scale * (1 + torch.rand(b, d, L, generator=g))).requires_grad_()
    A = -torch.logspace(-3, 3, n).repeat(d, 1)  # |A| from 1e-3 to 1e3
    A.requires_grad_()
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    leaves = [u.requires_grad_(), delta, A, B.requires_grad_(), C.requires_grad_()]
    y = selective_scan(u, delta, A, B, C)
    grads = torch.autograd.grad(y.square().sum(), leaves)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(gr).all() for gr in grads)
    y64 = selective_scan_sequential(*(t.detach().double() for t in leaves))
    torch.testing.assert_close(y.double(), y64, rtol=1e-3, atol=1e-3 * y64.abs().max().item())


def test_scan_low_precision_computes_in_float32_and_casts_back():
    ins = {k: v.detach().to(torch.bfloat16) for k, v in _inputs(L=20).items()}
    y = selective_scan(
        ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], ins["D"], ins["z"], ins["delta_bias"], True
    )
    ref = selective_scan_sequential(
        *(ins[k].float() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")), delta_softplus=True
    )
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("fn", [selective_scan, selective_scan_sequential])
@pytest.mark.parametrize(
    "bad,match",
    [
        ({"u": torch.zeros(2, 6)}, "u must be"),
        ({"delta": torch.zeros(2, 6, 8)}, "delta must have"),
        ({"A": torch.zeros(5, 4)}, "A must be"),
        ({"A": torch.zeros(6, 4, dtype=torch.complex64)}, "complex A"),
        ({"B": torch.zeros(2, 5, 7)}, "B must be"),
        ({"C": torch.zeros(2, 4, 4, 7)}, "C must be"),  # 4 groups do not divide d_inner=6
        ({"D": torch.zeros(5)}, "D must be"),
        ({"z": torch.zeros(2, 6, 8)}, "z must have"),
        ({"delta_bias": torch.zeros(6, 1)}, "delta_bias must be"),
    ],
)
def test_scan_bad_inputs_raise_clear_errors(fn, bad, match):
    ins = {k: v.detach() for k, v in _inputs(L=7).items()}
    ins.update(bad)
    with pytest.raises((ValueError, NotImplementedError), match=match):
        fn(**ins)


def test_scan_bad_chunk_size():
    ins = {k: v.detach() for k, v in _inputs(L=7).items()}
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**ins, chunk_size=0)
