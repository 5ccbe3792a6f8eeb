"""Mamba / BiMamba: upstream-compatible parameters, padding semantics, gradients, backends."""

import importlib.util
import io
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from hqjepa.models.mamba import BiMamba, Mamba


def upstream_shapes(d_model, d_state=16, d_conv=4, expand=2):
    """State-dict keys (in order) and shapes of mamba_ssm.modules.mamba_simple.Mamba, transcribed
    from its __init__ (state-spaces/mamba, mamba_ssm/modules/mamba_simple.py, v2.3.2.post1):
    A_log (d_inner, d_state), D (d_inner), in_proj Linear(d_model, 2 d_inner, bias=False),
    conv1d Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=True),
    x_proj Linear(d_inner, dt_rank + 2 d_state, bias=False), dt_proj Linear(dt_rank, d_inner),
    out_proj Linear(d_inner, d_model, bias=False); d_inner = expand d_model,
    dt_rank = ceil(d_model / 16)."""
    di, r = expand * d_model, math.ceil(d_model / 16)
    return {
        "A_log": (di, d_state),
        "D": (di,),
        "in_proj.weight": (2 * di, d_model),
        "conv1d.weight": (di, 1, d_conv),
        "conv1d.bias": (di,),
        "x_proj.weight": (r + 2 * d_state, di),
        "dt_proj.weight": (di, r),
        "dt_proj.bias": (di,),
        "out_proj.weight": (d_model, di),
    }


# Printed from upstream's own Mamba(16) (d_state=16, expand=2) built from the 2.3.2.post1 sdist.
UPSTREAM_MAMBA_16 = {
    "A_log": (32, 16),
    "D": (32,),
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (33, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "out_proj.weight": (16, 32),
}


def _shapes(m):
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("d_model,d_state,expand", [(16, 16, 2), (192, 16, 2), (24, 8, 1), (100, 4, 3)])
def test_mamba_parameters_match_upstream(d_model, d_state, expand):
    m = Mamba(d_model, d_state=d_state, expand=expand)
    assert list(_shapes(m).items()) == list(upstream_shapes(d_model, d_state, 4, expand).items())
    assert _shapes(Mamba(16)) == UPSTREAM_MAMBA_16


def test_mamba_initialisation_matches_upstream_rules():
    m = Mamba(64, d_state=16, dt_min=0.001, dt_max=0.1)
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 17.0)).repeat(128, 1))
    torch.testing.assert_close(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound
    assert m.dt_proj.bias._no_reinit and m.A_log._no_weight_decay and m.D._no_weight_decay
    assert m.A_log.dtype == torch.float32 and m.D.dtype == torch.float32


def test_mamba_state_dict_round_trips():
    torch.manual_seed(0)
    a = BiMamba(32, d_state=8)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = BiMamba(32, d_state=8)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # each direction is a plain Mamba state dict
    fwd = {k[len("fwd.") :]: v for k, v in a.state_dict().items() if k.startswith("fwd.")}
    assert set(a.state_dict()) == {f"{p}.{k}" for p in ("fwd", "bwd") for k in fwd}
    Mamba(32, d_state=8).load_state_dict(fwd)


def _padded_batch(d_model, lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = max(lens)
    x = torch.randn(len(lens), L, d_model, generator=g, dtype=torch.float64)
    valid = torch.arange(L)[None] < torch.tensor(lens)[:, None]
    return x, valid


@pytest.mark.parametrize("module", ["mamba", "bimamba"])
def test_padding_does_not_influence_valid_tokens(module):
    torch.manual_seed(0)
    lens = [23, 9, 1, 17]
    m = (Mamba if module == "mamba" else BiMamba)(16, d_state=8, d_conv=4).double()
    x, valid = _padded_batch(16, lens)
    out = m(x.masked_fill(~valid[..., None], float("nan")), valid)  # pads hold garbage
    for i, n in enumerate(lens):
        alone = m(x[i : i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], rtol=1e-10, atol=1e-10)
        assert (out[i, n:] == 0).all()


def test_padding_reversed_sequence_has_leading_pads_exact():
    """Reversing an end-padded sequence puts the pads first: the state must stay exactly zero."""
    torch.manual_seed(0)
    m = Mamba(16, d_state=8, bias=True).double()  # a bias would leak through the conv if unmasked
    lens = [20, 5]
    x, valid = _padded_batch(16, lens)
    out = m(x.flip(1), valid.flip(1)).flip(1)
    for i, n in enumerate(lens):
        alone = m(x[i : i + 1, :n].flip(1)).flip(1)
        torch.testing.assert_close(out[i, :n], alone[0], rtol=1e-10, atol=1e-10)


def test_gradients_reach_every_parameter_and_skip_pads():
    torch.manual_seed(0)
    m = BiMamba(16, d_state=8)
    x, valid = _padded_batch(16, [12, 7])
    x = x.float().requires_grad_()
    m(x, valid).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert (x.grad[~valid] == 0).all() and (x.grad[valid].abs().sum(-1) > 0).all()


def test_mamba_bad_inputs():
    m = Mamba(16, d_state=4)
    with pytest.raises(ValueError, match="backend must be one of"):
        Mamba(16, backend="triton")
    with pytest.raises(ValueError, match="hidden_states must be"):
        m(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="valid must be a bool"):
        m(torch.zeros(2, 5, 16), torch.ones(2, 5))
    with pytest.raises(ValueError, match="valid must be a bool"):
        m(torch.zeros(2, 5, 16), torch.ones(2, 4, dtype=torch.bool))


def test_cpu_paths_never_import_mamba_ssm():
    before = "mamba_ssm" in sys.modules
    Mamba(16, backend="auto")(torch.randn(1, 5, 16))
    Mamba(16, backend="torch")(torch.randn(1, 5, 16))
    assert ("mamba_ssm" in sys.modules) == before


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is not None, reason="mamba-ssm is installed")
def test_cuda_backend_without_mamba_ssm_says_how_to_install():
    with pytest.raises(RuntimeError, match=r"pip install 'hqjepa\[gpu\]'"):
        Mamba(16, backend="cuda")(torch.randn(1, 5, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_matches_upstream_mamba_on_gpu():
    up_mod = pytest.importorskip("mamba_ssm.modules.mamba_simple")
    torch.manual_seed(0)
    up = up_mod.Mamba(64, d_state=16).cuda()
    x = torch.randn(4, 144, 64, device="cuda")
    ref = up(x)
    for backend in ("cuda", "torch"):
        ours = Mamba(64, d_state=16, backend=backend).cuda()
        ours.load_state_dict(up.state_dict())
        torch.testing.assert_close(ours(x), ref, rtol=1e-3, atol=1e-4)
