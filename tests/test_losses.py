"""Loss terms: each against its formula on small examples."""

import math

import pytest
import torch

from hqjepa.losses.cross_modal import cross_modal_loss
from hqjepa.losses.masked import masked_pool, masked_token_mean
from hqjepa.losses.pixel_stats import patch_band_stats, pixel_stats_loss
from hqjepa.losses.prediction import prediction_loss
from hqjepa.losses.sigreg import SIGReg
from hqjepa.losses.weighting import S_MAX, S_MIN, LossWeighting


def test_prediction_loss_matches_formula_and_ignores_padding():
    torch.manual_seed(0)
    pred, tgt = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    valid = torch.ones(2, 3, 5, dtype=torch.bool)
    valid[0, 1, 3:] = False
    # hand computation: per block mean over its valid tokens and channels, then mean over blocks
    r = (pred - tgt).abs()
    sl1 = torch.where(r < 1.0, 0.5 * r**2, r - 0.5).mean(-1)
    blocks = [sl1[b, k][valid[b, k]].mean() for b in range(2) for k in range(3)]
    expected = torch.stack(blocks).mean()
    assert torch.allclose(prediction_loss(pred, tgt, valid), expected)
    # garbage in padded slots changes nothing
    pred2 = pred.clone()
    pred2[0, 1, 3:] = 1e6
    assert torch.allclose(prediction_loss(pred2, tgt, valid), expected)
    # targets carry no gradient
    tgt.requires_grad_(True)
    pred.requires_grad_(True)
    prediction_loss(pred, tgt, valid).backward()
    assert tgt.grad is None and pred.grad is not None


def test_cross_modal_loss_compares_layer_normed_tokens():
    v = torch.ones(1, 1, 2, dtype=torch.bool)
    a = torch.tensor([1.0, 2.0, 3.0]).expand(1, 1, 2, 3)
    # scale and offset do not matter: LN(a) == LN(10 a + 5)
    assert cross_modal_loss(a, 10 * a + 5, v, "mse").item() == pytest.approx(0.0, abs=1e-9)
    # opposite tokens: LN(a) = [-s, 0, s] with s = sqrt(1.5), LN(-a) = -LN(a)
    s = 1.5**0.5
    assert cross_modal_loss(a, -a, v, "mse").item() == pytest.approx((2 * (2 * s) ** 2) / 3, rel=1e-4)
    assert cross_modal_loss(a, -a, v, "smooth_l1", beta=1.0).item() == pytest.approx((2 * (2 * s - 0.5)) / 3, rel=1e-4)
    with pytest.raises(ValueError, match="kind must be"):
        cross_modal_loss(a, a, v, "cosine")


def test_masked_helpers():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    v = torch.tensor([[True, True, False]])
    assert masked_pool(x, v).item() == 2.0
    assert masked_token_mean(torch.tensor([[[1.0, 3.0, 100.0]]]), v[None]).item() == 2.0


def _sigreg_reference(z, a, t_max, knots):
    """Direct numerical integration of N * int_R |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt."""
    t = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=torch.float64)
    x = (z.double() @ a.double())[:, :, None] * t
    ecf_re, ecf_im = x.cos().mean(0), x.sin().mean(0)
    phi = torch.exp(-0.5 * t**2)
    err = ((ecf_re - phi) ** 2 + ecf_im**2) * phi
    return (torch.trapezoid(err, t, dim=-1) * z.shape[0]).mean()


def test_sigreg_equals_trapezoid_integral_of_epps_pulley():
    torch.manual_seed(0)
    sig = SIGReg(num_slices=8, knots=17, t_max=3.0)
    z = torch.randn(64, 6) * 1.7 + 0.3
    a = sig.directions(6, step=5, device=z.device)
    assert torch.allclose(a.norm(dim=0), torch.ones(8), atol=1e-6)
    assert sig(z, step=5).item() == pytest.approx(_sigreg_reference(z, a, 3.0, 17).item(), rel=1e-4)


def test_sigreg_small_for_gaussian_large_for_collapse_and_differentiable():
    torch.manual_seed(1)
    sig = SIGReg(num_slices=64)
    gauss = sig(torch.randn(2048, 16), step=0).item()
    collapsed = sig(torch.full((2048, 16), 0.5) + 0.01 * torch.randn(2048, 16), step=0).item()
    anisotropic = sig(torch.randn(2048, 16) * torch.linspace(0.1, 3, 16), step=0).item()
    assert gauss < 5.0 < 100 < anisotropic < collapsed  # O(1) under the null, grows with N otherwise
    z = torch.randn(256, 16, requires_grad=True)
    sig(z * 3, step=0).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_sigreg_directions_shared_per_step_and_redrawn_between_steps():
    s1, s2 = SIGReg(num_slices=4, seed=7), SIGReg(num_slices=4, seed=7)
    assert torch.equal(s1.directions(8, 3, "cpu"), s2.directions(8, 3, "cpu"))  # every rank alike
    assert not torch.equal(s1.directions(8, 3, "cpu"), s1.directions(8, 4, "cpu"))


def test_fixed_weighting_is_the_paper_objective():
    w = LossWeighting("fixed", {"pred": 1.0, "cm": 0.5, "sig": 0.05, "fqs": 0.0})
    assert w.names == ("pred", "cm", "sig")
    terms = {"pred": torch.tensor(2.0), "cm": torch.tensor(4.0), "sig": torch.tensor(10.0)}
    assert w(terms).item() == pytest.approx(2.0 + 2.0 + 0.5)


def test_uncertainty_weighting_starts_at_fixed_and_learns_towards_inverse_loss():
    base = {"pred": 1.0, "cm": 0.5, "fqs": 0.1}
    w = LossWeighting("uncertainty", base)
    assert w.weights() == pytest.approx(base)
    terms = {"pred": torch.tensor(2.0), "cm": torch.tensor(4.0), "fqs": torch.tensor(0.0)}
    expected = sum(base[n] * terms[n].item() - math.log(base[n]) for n in base)
    assert w(terms).item() == pytest.approx(expected, rel=1e-6)
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        w(terms).backward()
        opt.step()
    got = w.weights()
    assert got["pred"] == pytest.approx(1 / 2.0, rel=0.02) and got["cm"] == pytest.approx(1 / 4.0, rel=0.02)
    assert got["fqs"] == pytest.approx(math.exp(-S_MIN), rel=1e-3)  # zero loss: weight capped, not infinite
    assert S_MIN < S_MAX


def test_dwa_weighting_favours_the_stalling_term():
    w = LossWeighting("dwa", {"pred": 1.0, "cm": 1.0}, temperature=1.0)
    for i in range(200):  # pred falls fast, cm stalls
        w({"pred": torch.tensor(10.0 * 0.98**i), "cm": torch.tensor(1.0)})
    got = w.weights()
    assert got["cm"] > got["pred"] and sum(got.values()) == pytest.approx(2.0, rel=1e-5)


def test_gradnorm_weights_make_the_configured_weights_gradient_shares():
    base = {"pred": 1.0, "sig_ctx": 0.2, "fqs": 0.1}
    w = LossWeighting("gradnorm", base)
    z = torch.randn(5, 7, requires_grad=True)
    terms = {
        "pred": 1e-4 * (z**2).sum(),  # scales five orders of magnitude apart,
        "sig_ctx": 30.0 * (z.sin() ** 2).sum(),  # as SIGReg on tokens and L_pred are
        "fqs": 0.5 * z.mean(),
    }
    raw = {n: torch.autograd.grad(t, z, retain_graph=True)[0].norm().item() for n, t in terms.items()}
    total = w(terms, shared=z)
    got = w.applied
    assert got == pytest.approx(w.weights())
    weighted = {n: got[n] * raw[n] for n in base}
    shares = {n: v / sum(weighted.values()) for n, v in weighted.items()}
    assert shares == pytest.approx({n: b / sum(base.values()) for n, b in base.items()}, rel=1e-5)
    assert got["pred"] == 1.0 and weighted["sig_ctx"] == pytest.approx(0.2 * raw["pred"], rel=1e-5)
    assert total.item() == pytest.approx(sum(got[n] * terms[n].item() for n in base), rel=1e-5)
    (gz,) = torch.autograd.grad(total, z, retain_graph=True)  # the weights are constants: no gradient through them
    expected = sum(got[n] * torch.autograd.grad(terms[n], z, retain_graph=True)[0] for n in base)
    assert torch.allclose(gz, expected, rtol=1e-5, atol=1e-8)


def test_gradnorm_smooths_norms_and_keeps_base_weight_for_a_term_without_gradient():
    w = LossWeighting("gradnorm", {"pred": 1.0, "cm": 1.0, "fqs": 0.5})
    z = torch.ones(3, requires_grad=True)
    assert w.weights() == {"pred": 1.0, "cm": 1.0, "fqs": 0.5}  # nothing measured yet: the configured ones
    other = torch.ones(3, requires_grad=True)  # fqs does not reach z
    w({"pred": 2.0 * z.sum(), "cm": 1.0 * z.sum(), "fqs": other.sum()}, shared=z)
    g1 = w.grad_norms.clone()
    assert g1.tolist() == pytest.approx([2.0 * 3**0.5, 3**0.5, 0.0])
    assert w.weights() == pytest.approx({"pred": 1.0, "cm": 2.0, "fqs": 0.5})
    w({"pred": 4.0 * z.sum(), "cm": 1.0 * z.sum(), "fqs": other.sum()}, shared=z)
    assert w.grad_norms[0].item() == pytest.approx(0.9 * g1[0].item() + 0.1 * 4.0 * 3**0.5)
    state = w.state_dict()  # resumed runs continue with the same smoothed norms
    w2 = LossWeighting("gradnorm", {"pred": 1.0, "cm": 1.0, "fqs": 0.5})
    w2.load_state_dict(state)
    assert w2.weights() == pytest.approx(w.weights())


def test_gradnorm_needs_the_shared_representation_only_while_training():
    w = LossWeighting("gradnorm", {"pred": 1.0, "cm": 1.0})
    z = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="needs the shared representation"):
        w({"pred": z.sum(), "cm": z.sum()})
    w.eval()  # evaluation: the weights measured so far (the configured ones before any step)
    assert w({"pred": torch.tensor(2.0), "cm": torch.tensor(3.0)}).item() == pytest.approx(5.0)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="fixed, uncertainty, dwa, gradnorm"):
        LossWeighting("pcgrad", {"pred": 1.0})


def test_patch_band_stats_are_standardised_means_and_log_stds_in_token_order():
    g = torch.Generator().manual_seed(0)
    s2 = torch.randn(2, 3, 4, 6, generator=g) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 2.0
    z = patch_band_stats(s2, patch=2, eps=1e-3)
    assert z.shape == (2, 6, 6)  # 2 x 3 patches, 3 bands x (mean, log std)
    raw = torch.zeros(2, 6, 6)
    for b in range(2):
        for i in range(2):
            for j in range(3):  # token i * 3 + j: patch row i, column j (the encoder's row-major order)
                px = s2[b, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(3, 4)
                raw[b, i * 3 + j] = torch.cat([px.mean(-1), torch.log(px.std(-1) + 1e-3)])
    flat = raw.reshape(-1, 6)
    assert torch.allclose(z, (raw - flat.mean(0)) / flat.std(0), atol=1e-5)
    assert torch.allclose(z.reshape(-1, 6).mean(0), torch.zeros(6), atol=1e-5)
    # a textured patch has a larger log-std feature than a flat one of the same mean
    flat_then_texture = torch.zeros(1, 1, 2, 4)
    flat_then_texture[0, 0, :, 2:] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    z2 = patch_band_stats(flat_then_texture, patch=2)
    assert z2[0, 0, 0] == z2[0, 1, 0] and z2[0, 1, 1] > z2[0, 0, 1]
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        patch_band_stats(s2, patch=4)


def test_pixel_stats_loss_is_masked_mse_and_ignores_padding():
    target = torch.randn(2, 2, 3, 4)
    valid = torch.tensor([[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [1, 1, 0]]], dtype=torch.bool)
    pred = target.clone()
    pred[~valid] += 100.0  # padding never counts
    assert pixel_stats_loss(pred, target, valid) == 0
    pred = target + 2.0
    assert torch.isclose(pixel_stats_loss(pred, target, valid), torch.tensor(4.0))
    with pytest.raises(ValueError, match="predicted"):
        pixel_stats_loss(pred[..., :2], target, valid)
