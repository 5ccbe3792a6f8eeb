"""A framework-free training step for HQ-JEPA: AdamW, schedules, clipping, EMA, mixed precision.

It knows torch.distributed (DDP gradient sync, agreeing on skipped steps) but nothing about Ray:
`ray_jobs/pretrain.py` and `hqjepa.pretrain_local` both drive it the same way:

    trainer = Trainer(model, cfg, steps_per_epoch, device)
    for micro_batches in batches:          # `optim.accumulation` dicts per step
        metrics = trainer.train_step(micro_batches)

Schedules follow I-JEPA, per optimiser step t over T = epochs * steps_per_epoch steps and
W = warmup_epochs * steps_per_epoch warm-up steps:
    lr(t) = start_lr + (lr - start_lr) t / W                                   for t < W
          = final_lr + (lr - final_lr) (1 + cos(pi (t - W) / (T - W))) / 2      after
    wd(t) = final_wd + (wd - final_wd) (1 + cos(pi t / T)) / 2
    m(t)  = ema_start + (ema_end - ema_start) t / T      (teacher momentum)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from hqjepa.config import Config


class NonFiniteLossError(RuntimeError):
    """Raised after `loss.max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


def warmup_cosine(step: int, total: int, warmup: int, start: float, peak: float, final: float) -> float:
    """Linear warm-up then cosine decay: start + (peak - start) t / W for t < W, then
    final + (peak - final) (1 + cos(pi min(1, (t - W) / (T - W)))) / 2."""
    if step < warmup:
        return start + (peak - start) * step / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, total: int, start: float, final: float) -> float:
    """Cosine from `start` to `final` over `total` steps: final + (start - final) (1 + cos(pi min(1, t / T))) / 2."""
    progress = min(step / max(total, 1), 1.0)
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear(step: int, total: int, start: float, final: float) -> float:
    """Linear from `start` to `final` over `total` steps, then held: start + (final - start) min(1, t / T)."""
    return start + (final - start) * min(step / max(total, 1), 1.0)


def _no_decay(name: str, p: nn.Parameter, module_no_wd: set[str]) -> bool:
    """Norms, biases, Mamba's A_log/D (upstream marks them _no_weight_decay), mask tokens and
    loss log-variances are excluded from weight decay."""
    return p.ndim <= 1 or name.endswith(".bias") or name in module_no_wd or name.endswith("mask_token")


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in two groups: decayed weights, and norms, biases, 1-d
    parameters, mask tokens and parameters flagged `_no_weight_decay` without decay (fused on CUDA)."""
    no_wd = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p, no_wd) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay, "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]
    fused = torch.cuda.is_available() and all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=fused or None)


COMPILED_MODULES = ("student", "teacher", "predictor", "s1_encoder", "s1_proj", "fusion", "pix_head")


def compile_enabled(cfg: Config, device: torch.device | str) -> bool:
    """`optim.compile`: true, false, or auto (on CUDA only: measured not to pay on the CPU)."""
    setting = cfg.optim.compile
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return bool(setting)


def compile_model(core: nn.Module) -> list[str]:
    """torch.compile, in place (`nn.Module.compile`: parameter names and state dicts unchanged), the
    encoders, predictor, fusion and heads the model has; the FQS head is left eager (its simulator
    keeps per-thread workspaces; on CUDA it has its own graph capture). Returns the names compiled."""
    done = []
    for name in COMPILED_MODULES:
        module = getattr(core, name, None)
        if isinstance(module, nn.Module):
            module.compile()
            done.append(name)
    return done


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Trainer:
    """Holds the optimiser and schedules of one HQ-JEPA run and performs its steps."""

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        steps_per_epoch: int,
        device: torch.device | str = "cpu",
        input_transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """input_transform: applied to each micro-batch on the step's device before the forward pass
        (`hqjepa.data.compact.BatchExpander`: the compact batches of the Ray Data stream are decoded
        there); None: batches arrive decoded."""
        self.model = model
        self.input_transform = input_transform
        self.core = model.module if hasattr(model, "module") else model  # DDP-wrapped or not
        self.cfg = cfg
        self.device = torch.device(device)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.optim.epochs * steps_per_epoch
        self.warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
        self.optimizer = build_optimizer(self.core, cfg)
        self.step = 0
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0
        precision = cfg.optim.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.trainable = [p for p in self.core.parameters() if p.requires_grad]
        self.compiled = compile_model(self.core) if compile_enabled(cfg, self.device) else []

    # --- schedules ---------------------------------------------------------------------------
    def lr(self, step: int | None = None) -> float:
        """Learning rate at `step` (default: the current step): warm-up from start_lr to lr, cosine to final_lr."""
        o = self.cfg.optim
        return warmup_cosine(
            self.step if step is None else step, self.total_steps, self.warmup_steps, o.start_lr, o.lr, o.final_lr
        )

    def weight_decay(self, step: int | None = None) -> float:
        """Weight decay at `step` (default: the current step): cosine from weight_decay to final_weight_decay."""
        o = self.cfg.optim
        return cosine(self.step if step is None else step, self.total_steps, o.weight_decay, o.final_weight_decay)

    def ema_momentum(self, step: int | None = None) -> float:
        """Teacher EMA momentum at `step` (default: the current step): linear from ema[0] to ema[1]."""
        start, end = self.cfg.optim.ema
        return linear(self.step if step is None else step, self.total_steps, start, end)

    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to: step // steps_per_epoch."""
        return self.step // max(self.steps_per_epoch, 1)

    # --- one step ----------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_step(self, micro_batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimiser step over `accumulation` micro-batches; returns the step's metrics."""
        micro_batches = list(micro_batches)
        t0 = time.perf_counter()
        self.model.train()
        lr, wd, momentum = self.lr(), self.weight_decay(), self.ema_momentum()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
            if g["apply_wd"]:
                g["weight_decay"] = wd
        self.optimizer.zero_grad(set_to_none=True)

        n = len(micro_batches)
        sums: dict[str, float] = {}
        finite = True
        samples = 0
        for i, mb in enumerate(micro_batches):
            mb = {k: v.to(self.device, non_blocking=True) for k, v in mb.items()}
            if self.input_transform is not None:
                mb = self.input_transform(mb)
            samples += int(mb["s2"].shape[0])
            sync = contextlib.nullcontext()
            if i < n - 1 and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()  # DDP: all-reduce gradients once, on the last micro-batch
            with sync:
                with self._autocast():
                    out = self.model(mb, step=self.step)
                loss = out.total.float()
                finite &= bool(torch.isfinite(loss))
                (loss / n).backward()
            for k, v in {"loss": loss, **{f"loss_{t}": v for t, v in out.terms.items()}, **out.diagnostics}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / n

        if self.cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.trainable if p.grad is not None])
        ok = torch.tensor(float(finite and bool(torch.isfinite(grad_norm))), device=self.device)
        if _distributed():  # every rank must agree to step or to skip
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if bool(ok):
            self.optimizer.step()
            self.core.update_teacher(momentum)
            self.consecutive_nonfinite = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.consecutive_nonfinite += 1
            if self.consecutive_nonfinite >= self.cfg.loss.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"stopping at step {self.step}: the loss or its gradient was non-finite for "
                    f"{self.consecutive_nonfinite} steps in a row (loss.max_nonfinite_steps="
                    f"{self.cfg.loss.max_nonfinite_steps}); last terms: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in sums.items())
                )
        self.step += 1
        if _distributed():  # log the global batch's losses, not this rank's share
            keys = sorted(sums)
            vec = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(vec, op=dist.ReduceOp.SUM)
            sums = dict(zip(keys, (vec / dist.get_world_size()).tolist(), strict=True))
        weights = self.core.weighting.weights()
        return {
            **sums,
            **{f"w_{k}": v for k, v in weights.items()},
            "lr": lr,
            "weight_decay": wd,
            "ema_momentum": momentum,
            "grad_norm": float(grad_norm),
            "skipped_steps": float(self.skipped_steps),
            "step_skipped": float(not bool(ok)),
            "samples": float(samples),
            "step_time_s": time.perf_counter() - t0,
        }

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Step counters, model (student, teacher, loss weighting) and optimiser state, for resuming."""
        return {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved."""
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_nonfinite = int(state["consecutive_nonfinite"])
