"""The framework-free training step: schedules, weight-decay groups, non-finite steps, state."""

import math
from pathlib import Path

import pytest
import torch

from hqjepa.config import config_from_dict
from hqjepa.engine import NonFiniteLossError, Trainer, cosine, linear, warmup_cosine
from hqjepa.models.hqjepa import HQJEPA
from tests.test_model import SMALL, _batch


def _trainer(**optim):
    raw = {k: dict(v) for k, v in SMALL.items()}
    raw["optim"] = {"epochs": 10, "warmup_epochs": 2, "batch_size": 4, **optim}
    raw["loss"]["max_nonfinite_steps"] = 3
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    return Trainer(HQJEPA(cfg), cfg, steps_per_epoch=5)


def test_schedules():
    assert warmup_cosine(0, 100, 10, 1e-4, 1e-3, 1e-6) == pytest.approx(1e-4)
    assert warmup_cosine(5, 100, 10, 1e-4, 1e-3, 1e-6) == pytest.approx(5.5e-4)
    assert warmup_cosine(10, 100, 10, 1e-4, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert warmup_cosine(55, 100, 10, 1e-4, 1e-3, 1e-6) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert warmup_cosine(100, 100, 10, 1e-4, 1e-3, 1e-6) == pytest.approx(1e-6)
    assert cosine(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert linear(25, 100, 0.996, 1.0) == pytest.approx(0.997)
    t = _trainer()
    assert (t.total_steps, t.warmup_steps) == (50, 10)
    assert t.ema_momentum(50) == pytest.approx(1.0)


def test_weight_decay_excludes_norms_biases_and_mamba_a_d():
    t = _trainer()
    decay, no_decay = t.optimizer.param_groups
    names = {id(p): n for n, p in t.core.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert any(n.endswith("A_log") for n in nd) and any(n.endswith(".D") for n in nd)
    assert all(not n.endswith(".bias") and "norm" not in n for n in d)
    assert any(n.endswith("mask_token") for n in nd)
    assert not any(n.startswith("teacher.") for n in d | nd)  # the teacher is never optimised


def test_steps_update_student_and_teacher_and_report_metrics():
    t = _trainer()
    b = _batch(t.cfg)
    s0 = [p.clone() for p in t.core.student.parameters()]
    tea0 = [p.clone() for p in t.core.teacher.parameters()]
    m = t.train_step([b, _batch(t.cfg, seed=1)])  # two micro-batches
    assert t.step == 1 and m["samples"] == 8
    for k in (
        "loss",
        "loss_pred",
        "loss_cm",
        "loss_sig",
        "loss_fqs",
        "fqs_gap",
        "lr",
        "ema_momentum",
        "grad_norm",
        "weight_decay",
        "w_pred",
    ):
        assert k in m and math.isfinite(m[k])
    assert any(not torch.equal(a, b) for a, b in zip(s0, t.core.student.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(tea0, t.core.teacher.parameters(), strict=True))


def test_nonfinite_loss_is_skipped_counted_and_stops_the_run():
    t = _trainer()
    bad = _batch(t.cfg)
    bad["s2"][0, 0, 0, 0] = float("nan")
    before = [p.clone() for p in t.core.parameters()]
    m = t.train_step([bad])
    assert m["step_skipped"] == 1 and t.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, t.core.parameters(), strict=True))  # nothing moved
    t.train_step([_batch(t.cfg)])
    assert t.consecutive_nonfinite == 0 and t.skipped_steps == 1
    t.train_step([bad])
    t.train_step([bad])
    with pytest.raises(NonFiniteLossError, match="non-finite for 3 steps in a row"):
        t.train_step([bad])


def test_state_roundtrip_continues_identically():
    a = _trainer()
    batches = [_batch(a.cfg, seed=s) for s in range(4)]
    a.train_step([batches[0]])
    state = a.state_dict()
    b = _trainer()
    b.load_state_dict(state)
    la = a.train_step([batches[1]])["loss"]
    lb = b.train_step([batches[1]])["loss"]
    assert la == pytest.approx(lb, rel=1e-6) and a.step == b.step == 2


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_export_writes_the_encoder_train_export_encoder_names(tmp_path, which):
    from hqjepa.checkpoint import export_trained_encoder, load_encoder, save_training_state

    t = _trainer()
    t.cfg.train.export_encoder = which
    t.train_step([_batch(t.cfg)])  # after a step the EMA teacher and the student differ
    assert any(
        not torch.equal(a, b) for a, b in zip(t.core.student.parameters(), t.core.teacher.parameters(), strict=True)
    )
    export_trained_encoder(tmp_path / "export.pt", t.core, t.cfg, {"step": t.step})
    assert torch.load(tmp_path / "export.pt", weights_only=True)["extra"] == {"step": 1, "encoder": which}
    save_training_state(tmp_path / "state.pt", t)
    want = getattr(t.core, which).state_dict()
    for path in ("export.pt", "state.pt"):  # an export and a training checkpoint give the same encoder
        encoder, _ = load_encoder(tmp_path / path)
        got = encoder.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_export_encoder_setting_is_checked():
    from hqjepa.config import ConfigError

    raw = {k: dict(v) for k, v in SMALL.items()}
    raw["train"] = {"export_encoder": "predictor"}
    with pytest.raises(ConfigError, match=r"train.export_encoder.*one of 'teacher', 'student'"):
        config_from_dict(raw)


def test_synthetic_epoch_draws_only_the_batches_its_steps_use():
    """train.steps_per_epoch below pairs / batch: the epoch renders just those batches (no drain of
    the rest); above it: further passes of fresh permutations; without it: one full shuffle."""
    from hqjepa.config import load_config
    from hqjepa.pretrain_local import synthetic_loader

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"

    def ids(loader):  # a pair's fingerprint: its S2 sum
        return [tuple(round(v, 3) for v in b["s2"].double().sum((1, 2, 3)).tolist()) for b in loader]

    base = {"data.synthetic_pairs": 24, "optim.batch_size": 4, "model.depth": 2}
    full = ids(synthetic_loader(load_config(tiny, base), 0))
    assert len(full) == 6 and len({x for b in full for x in b}) == 24  # every pair once
    short = ids(synthetic_loader(load_config(tiny, {**base, "train.steps_per_epoch": 2}), 0))
    assert short == full[:2]  # same order, cut
    long = ids(synthetic_loader(load_config(tiny, {**base, "train.steps_per_epoch": 9}), 0))
    assert len(long) == 9 and long[:6] == full
