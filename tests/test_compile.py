"""`optim.compile`: the compiled training step equals the eager one on the CPU; off by default."""

from __future__ import annotations

import pytest
import torch

from hqjepa.config import load_config
from hqjepa.engine import COMPILED_MODULES, Trainer, compile_enabled
from hqjepa.masks.multiblock import sample_masks
from hqjepa.models.hqjepa import HQJEPA

MICRO = {  # the tiny config's architecture, narrower and shallower: compiling it takes less time
    "model.depth": 1,
    "model.embed_dim": 32,
    "model.num_heads": 2,
    "model.predictor_depth": 1,
    "model.predictor_embed_dim": 32,
    "model.predictor_heads": 2,
    "model.s1_embed_dim": 16,
    "model.s1_heads": 2,
    "model.fusion_heads": 2,
    "optim.batch_size": 2,
}


def _batch(cfg):
    g = torch.Generator().manual_seed(0)
    size = cfg.model.image_size
    return {
        "s2": torch.randn(2, 12, size, size, generator=g),
        "s1": torch.randn(2, 2, size, size, generator=g),
        **sample_masks(2, cfg.model.grid, cfg.mask, g).as_dict(),
    }


def _trainer(compile_setting):
    cfg = load_config("configs/tiny.yaml", {**MICRO, "optim.compile": compile_setting})
    torch.manual_seed(0)
    return Trainer(HQJEPA(cfg), cfg, steps_per_epoch=10), cfg


def test_compile_is_off_by_default_and_auto_is_off_on_the_cpu():
    cfg = load_config("configs/tiny.yaml")
    assert cfg.optim.compile is False and not compile_enabled(cfg, "cpu")
    auto = load_config("configs/tiny.yaml", {"optim.compile": "auto"})
    assert not compile_enabled(auto, "cpu") and compile_enabled(auto, "cuda")
    trainer, _ = _trainer(False)
    assert trainer.compiled == []
    assert all(
        getattr(trainer.core, n)._compiled_call_impl is None for n in COMPILED_MODULES if hasattr(trainer.core, n)
    )


def test_compiled_step_equals_the_eager_step_on_the_cpu():
    """Two optimiser steps from the same weights on the same batch: losses and gradient norm within a
    relative 1e-5, weights within 1e-5 absolute (float32; the compiled kernels sum in another order);
    parameter names unchanged, so checkpoints are interchangeable."""
    torch.set_num_threads(1)
    eager, cfg = _trainer(False)
    compiled, _ = _trainer(True)
    assert compiled.compiled == [n for n in COMPILED_MODULES if hasattr(compiled.core, n)]
    assert list(compiled.core.state_dict()) == list(eager.core.state_dict())
    batch = _batch(cfg)
    for _ in range(2):
        a, b = eager.train_step([batch]), compiled.train_step([batch])
        for k in ("loss", "loss_pred", "loss_cm", "loss_sig", "loss_fqs", "grad_norm"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
    for (name, p), q in zip(eager.core.state_dict().items(), compiled.core.state_dict().values(), strict=True):
        if p.is_floating_point():
            assert torch.allclose(p, q, rtol=0, atol=1e-5), name
