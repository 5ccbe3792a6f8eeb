"""The HQ-JEPA model: shapes, padding invariance, what each config builds, EMA, gradients."""

import pytest
import torch

from hqjepa.config import config_from_dict
from hqjepa.masks.multiblock import sample_masks
from hqjepa.models.encoder import build_encoder
from hqjepa.models.hqjepa import HQJEPA
from hqjepa.models.pos_embed import sincos_2d

SMALL = {
    "model": {
        "image_size": 40,
        "patch_size": 10,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "d_state": 4,
        "predictor_embed_dim": 16,
        "predictor_depth": 1,
        "predictor_heads": 2,
        "s1_embed_dim": 16,
        "s1_depth": 1,
        "s1_heads": 2,
        "fusion_heads": 2,
    },
    "mask": {"num_targets": 2, "target_scale": [0.1, 0.2], "context_scale": [0.85, 1.0], "min_keep": 2},
    "loss": {"sigreg_slices": 16},
}


def _cfg(**loss):
    raw = {k: dict(v) for k, v in SMALL.items()}
    raw["loss"].update(loss)
    return config_from_dict(raw)


def _batch(cfg, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = sample_masks(b, cfg.model.grid, cfg.mask, g)
    size = cfg.model.image_size
    return {
        "s2": torch.randn(b, 12, size, size, generator=g),
        "s1": torch.randn(b, 2, size, size, generator=g),
        **m.as_dict(),
    }


def test_sincos_table():
    pe = sincos_2d(8, 3, 2)
    assert pe.shape == (6, 8)
    assert torch.allclose(pe[0], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(pe[1, :4], pe[0, :4])  # same row, next column: row half unchanged


def test_encoder_any_grid_and_padding_invariance():
    cfg = _cfg()
    torch.manual_seed(0)
    enc = build_encoder(cfg.model).eval()
    assert enc(torch.randn(2, 12, 30, 50)).shape == (2, 15, 32)  # GeoBench sizes: any multiple of the patch
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        enc(torch.randn(1, 12, 32, 32))
    with pytest.raises(ValueError, match="expects 12 bands"):
        enc(torch.randn(1, 13, 40, 40))
    x = torch.randn(2, 12, 40, 40)
    idx = torch.tensor([[0, 3, 5, 9, 0, 0], [1, 2, 4, 6, 8, 15]])
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = enc(x, idx, valid)
    alone = enc(x[:1], idx[:1, :4], valid[:1, :4])  # the first sample without padding
    assert torch.allclose(padded[0, :4], alone[0], atol=1e-5)
    assert padded[0, 4:].abs().max() == 0


@pytest.mark.parametrize(
    "weights, built",
    [
        ({"w_cm": 0.0, "w_sig": 0.0, "w_fqs": 0.0}, set()),
        ({"w_cm": 1.0, "w_sig": 0.0, "w_fqs": 0.0}, {"s1_encoder", "s1_proj"}),
        ({"w_cm": 1.0, "w_sig": 0.05, "w_fqs": 0.1}, {"s1_encoder", "s1_proj", "fusion", "sigreg", "fqs_head"}),
        ({"w_cm": 0.0, "w_sig": 0.0, "w_fqs": 0.0, "w_sig_ctx": 0.05}, {"sigreg"}),
        ({"w_cm": 0.0, "w_sig": 0.0, "w_fqs": 0.0, "w_pix": 0.5}, {"pix_head"}),
    ],
)
def test_only_used_parts_are_built(weights, built):
    model = HQJEPA(_cfg(**weights))
    optional = {"s1_encoder", "s1_proj", "fusion", "sigreg", "fqs_head", "pix_head"}
    assert {n for n in optional if hasattr(model, n)} == built
    out = model(_batch(model.cfg), step=0)
    assert set(out.terms) == {"pred"} | {
        t
        for t, k in (("cm", "w_cm"), ("sig", "w_sig"), ("fqs", "w_fqs"), ("sig_ctx", "w_sig_ctx"), ("pix", "w_pix"))
        if weights.get(k, 0) > 0
    }
    assert torch.isfinite(out.total)


def test_full_objective_gradients_reach_every_trainable_part():
    torch.manual_seed(0)
    model = HQJEPA(_cfg(weighting="uncertainty", w_sig_ctx=0.05, w_pix=0.5))
    out = model(_batch(model.cfg), step=3)
    assert set(out.terms) == {"pred", "cm", "sig", "fqs", "sig_ctx", "pix"}
    out.total.backward()
    assert "fqs_gap" in out.diagnostics and "fqs_fidelity" in out.diagnostics
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert no_grad == []
    assert all(p.grad is None for p in model.teacher.parameters())


def test_gradnorm_balances_every_term_on_the_student_context_tokens():
    torch.manual_seed(0)
    base = {"pred": 1.0, "cm": 1.0, "sig": 0.05, "fqs": 0.1, "sig_ctx": 0.2}
    model = HQJEPA(_cfg(weighting="gradnorm", w_cm=1.0, w_sig=0.05, w_fqs=0.1, w_sig_ctx=0.2))
    seen = []
    model.student.register_forward_hook(lambda mod, args, out: seen.append(out))
    out = model(_batch(model.cfg), step=0)
    ctx = seen[-1]
    applied = model.weighting.applied
    weighted = {
        n: applied[n] * torch.autograd.grad(out.terms[n], ctx, retain_graph=True)[0].norm().item() for n in base
    }
    shares = {n: v / sum(weighted.values()) for n, v in weighted.items()}
    assert shares == pytest.approx({n: b / sum(base.values()) for n, b in base.items()}, rel=1e-4)
    out.total.backward()
    assert all(p.grad is not None for p in model.student.parameters())


def test_teacher_starts_equal_and_follows_ema():
    model = HQJEPA(_cfg())
    for s, t in zip(model.student.parameters(), model.teacher.parameters(), strict=True):
        assert torch.equal(s, t)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = [t.clone() for t in model.teacher.parameters()]
    model.update_teacher(0.75)
    for b, s, t in zip(before, model.student.parameters(), model.teacher.parameters(), strict=True):
        assert torch.allclose(t, 0.75 * b + 0.25 * s)


@pytest.mark.parametrize("on", ["tokens", "pooled"])
def test_sigreg_on_context_sees_tokens_or_one_mean_token_per_sample(on):
    from hqjepa.losses.masked import masked_pool

    torch.manual_seed(0)
    model = HQJEPA(_cfg(w_cm=0.0, w_sig=0.0, w_fqs=0.0, w_sig_ctx=0.05, sig_ctx_on=on))
    batch = _batch(model.cfg)
    seen = []
    model.sigreg.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    out = model(batch, step=0)
    ctx = model.student(batch["s2"], batch["ctx_idx"], batch["ctx_valid"]).detach()
    want = ctx[batch["ctx_valid"]] if on == "tokens" else masked_pool(ctx, batch["ctx_valid"])
    assert len(seen) == 1 and torch.allclose(seen[0], want, atol=1e-5)
    assert seen[0].shape[0] == (int(batch["ctx_valid"].sum()) if on == "tokens" else 4)
    assert torch.isfinite(out.terms["sig_ctx"])


def test_targets_are_the_last_block_or_the_mean_of_the_last_k_blocks():
    import torch.nn.functional as F

    from hqjepa.config import ConfigError

    torch.manual_seed(0)
    x = torch.randn(3, 12, 40, 40)
    one, two = HQJEPA(_cfg()), HQJEPA(_cfg(target_blocks=2))
    two.load_state_dict(one.state_dict())
    with torch.no_grad():  # a teacher that differs from the student, so the test sees which one is used
        for p in one.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    two.load_state_dict(one.state_dict())

    def ln(t):
        return F.layer_norm(t, (t.shape[-1],))

    blocks = one.teacher.block_outputs(x, 2)
    assert torch.allclose(blocks[-1], one.teacher(x), atol=1e-6)
    assert torch.allclose(one.teacher_tokens(x), ln(one.teacher(x)), atol=1e-6)
    want = ln((ln(blocks[0]) + ln(blocks[1])) / 2)
    assert torch.allclose(two.teacher_tokens(x), want, atol=1e-5)
    assert not torch.allclose(two.teacher_tokens(x), one.teacher_tokens(x), atol=1e-3)
    out = two(_batch(two.cfg), step=0)
    assert torch.isfinite(out.total)
    with pytest.raises(ConfigError, match=r"loss.target_blocks = 3: must be in \[1, model.depth=2\]"):
        _cfg(target_blocks=3)


@pytest.mark.parametrize("on", ["targets", "context"])
def test_pixel_statistics_term_reads_predictions_or_context_tokens(on):
    from hqjepa.losses.pixel_stats import patch_band_stats

    torch.manual_seed(0)
    model = HQJEPA(_cfg(w_cm=0.0, w_sig=0.0, w_fqs=0.0, w_pix=1.0, pix_on=on))
    batch = _batch(model.cfg)
    out = model(batch, step=0)
    assert torch.isfinite(out.terms["pix"])
    model.zero_grad()
    out.terms["pix"].backward()
    pred_grad = sum(float(p.grad.abs().sum()) for p in model.predictor.parameters() if p.grad is not None)
    student_grad = sum(float(p.grad.abs().sum()) for p in model.student.parameters() if p.grad is not None)
    assert student_grad > 0 and (pred_grad > 0) == (on == "targets")
    if on == "context":  # the head's own reading of the student's context tokens, checked by hand
        with torch.no_grad():
            ctx = model.student(batch["s2"], batch["ctx_idx"], batch["ctx_valid"])
            z = patch_band_stats(batch["s2"], 10)
            want = torch.gather(z, 1, batch["ctx_idx"].unsqueeze(-1).expand(-1, -1, z.shape[-1]))
            err = (model.pix_head(ctx) - want).square().mean(-1)
            v = batch["ctx_valid"].float()
            expect = ((err * v).sum(1) / v.sum(1)).mean()
        assert torch.allclose(out.terms["pix"].detach(), expect, atol=1e-5)
