"""One HQ-JEPA training step: the full objective against a bare I-JEPA step, measured in one run.

    python -m bench.step [--config configs/tiny.yaml] [--batch 32] [--repeats 5] [--device cpu]
                         [--set model.mamba_backend=cuda] [--variants bare,full]

Every variant trains the same encoder on the same batch and masks; only the loss terms differ:
  bare    L_pred only (no S1 encoder, fusion, SIGReg or FQS head are even built)
  +cm     L_pred + L_cm
  +sig    L_pred + L_cm + L_sig
  full    all four terms (the paper's objective); (full - +sig) / full is the FQS share of a step
  gradnorm  full with `loss.weighting: gradnorm`; gradnorm / full is what measuring the terms'
          gradient norms every step costs
Timings are medians over `--repeats` steps after warm-up, variants interleaved so machine noise
hits them alike. Also printed: model FLOPs per sample (forward + backward, counted by
torch.utils.flop_counter, plus the selective scans it cannot see, counted analytically) and the
achieved FLOP/s against a matmul peak measured on this machine in the same run, in the step's
precision (float32 on CPU; bfloat16 under `optim.precision: auto` on CUDA, so the fraction is MFU).
Output: one JSON object per line.

    python -m bench.step --components [--compile-modes eager,compiled] [--optimizers default,fused]

times the parts of the full step one by one, each called alone on the inputs it received in a real
step (captured once): encoder (student, fwd + bwd), teacher (fwd), predictor, S1 branch (S1
encoder + projection), fusion, each loss term (L_pred, L_cm, L_sig via SIGReg, L_fqs via the FQS
head), the optimiser step and the EMA update; for every `--compile-modes` entry (`compiled`:
`optim.compile: true`, the same weights) and `--optimizers` entry (`fused`: AdamW(fused=True) where
the device supports it; `default`: what the Trainer builds), interleaved, medians over --repeats;
plus the whole step per mode, the first (compiling) step's time, and the compiled step's largest
difference from the eager one on the same batch and weights (`bench: step_components`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hqjepa.config import apply_overrides, load_config, parse_override
from hqjepa.engine import Trainer
from hqjepa.masks.multiblock import sample_masks
from hqjepa.models.hqjepa import HQJEPA
from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


VARIANTS = {
    "bare": {"loss.w_cm": 0.0, "loss.w_sig": 0.0, "loss.w_fqs": 0.0},
    "+cm": {"loss.w_sig": 0.0, "loss.w_fqs": 0.0},
    "+sig": {"loss.w_fqs": 0.0},  # = the full objective without FQS
    "full": {},
    "gradnorm": {"loss.weighting": "gradnorm"},  # full, weights from per-term gradient norms (one partial
}  # backward per term to the context tokens each step)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul in `dtype` on this device."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _scan_backend(backend: str, device: torch.device) -> str:
    """Which selective scan the step ran: upstream's CUDA kernels or our PyTorch scan."""
    from hqjepa.models.mamba import _cuda_kernels

    if backend == "auto":
        return "cuda" if device.type == "cuda" and not isinstance(_cuda_kernels(), str) else "torch"
    return backend


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def scan_flops(cfg, batch: torch.Tensor, n_ctx: float) -> float:
    """Selective-scan FLOPs FlopCounterMode cannot see (elementwise work), forward + backward.

    Per token, channel and state: discretisation exp(dt A), dt B x, the recurrence multiply-add
    and the C contraction ~ 6 FLOPs forward; backward ~ 2x forward. Two directions per Mamba block;
    the student runs on the context tokens, the teacher (forward only) on the full grid."""
    m = cfg.model
    d_inner = m.expand * m.embed_dim
    per_token = 6 * d_inner * m.d_state * 2 * m.n_mamba  # both directions, all Mamba blocks
    b = batch.shape[0]
    return b * (3 * per_token * n_ctx + per_token * m.grid**2)


# --- per-component times, eager vs compiled --------------------------------------------------------


def _capture_inputs(core, batch: dict, step_fn) -> dict[str, tuple]:
    """Run one step (`step_fn`) with forward hooks on the model's parts; returns each part's first
    call's (args, kwargs), detached."""
    import hqjepa.models.hqjepa as model_mod

    seen: dict[str, tuple] = {}

    def keep(name):
        def hook(_module, args, kwargs):
            if name not in seen:
                seen[name] = (_detach(args), _detach(kwargs))

        return hook

    handles = []
    for name in ("student", "teacher", "predictor", "s1_encoder", "s1_proj", "fusion", "sigreg", "fqs_head"):
        mod = getattr(core, name, None)
        if mod is not None:
            handles.append(mod.register_forward_pre_hook(keep(name), with_kwargs=True))
    originals = {n: getattr(model_mod, n) for n in ("prediction_loss", "cross_modal_loss")}

    def wrap(name, fn):
        def inner(*args, **kwargs):
            if name not in seen:
                seen[name] = (_detach(args), _detach(kwargs))
            return fn(*args, **kwargs)

        return inner

    for n, fn in originals.items():
        setattr(model_mod, n, wrap(n, fn))
    try:
        step_fn()
    finally:
        for h in handles:
            h.remove()
        for n, fn in originals.items():
            setattr(model_mod, n, fn)
    return seen


def _detach(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def _with_grad(obj):
    """Floating-point tensors of obj as fresh leaves that require grad (inputs of a timed part)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.is_floating_point())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_with_grad(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _with_grad(v) for k, v in obj.items()}
    return obj


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if hasattr(out, "__dict__"):
        return [t for o in vars(out).values() for t in _tensors(o)]
    return []


def component_calls(core, seen: dict[str, tuple]) -> dict[str, tuple]:
    """name -> (callable(args, kwargs), backward?) for the parts of the step (module docstring)."""
    import hqjepa.models.hqjepa as model_mod

    calls = {}
    if "student" in seen:
        calls["encoder"] = (lambda a, k: core.student(*a, **k), True)
    if "teacher" in seen:
        calls["teacher"] = (lambda a, k: core.teacher(*a, **k), False)
    if "predictor" in seen:
        calls["predictor"] = (lambda a, k: core.predictor(*a, **k), True)
    if "s1_encoder" in seen:
        calls["s1_branch"] = (lambda a, k: core.s1_proj(core.s1_encoder(*a, **k)), True)
    if "fusion" in seen:
        calls["fusion"] = (lambda a, k: core.fusion(*a, **k), True)
    if "prediction_loss" in seen:
        calls["loss_pred"] = (lambda a, k: model_mod.prediction_loss(*a, **k), True)
    if "cross_modal_loss" in seen:
        calls["loss_cm"] = (lambda a, k: model_mod.cross_modal_loss(*a, **k), True)
    if "sigreg" in seen:
        calls["loss_sig (SIGReg)"] = (lambda a, k: core.sigreg(*a, **k), True)
    if "fqs_head" in seen:
        calls["loss_fqs (FQS head)"] = (lambda a, k: core.fqs_head(*a, **k), True)
    return calls


def time_components(trainer, seen, device: torch.device) -> dict[str, float]:
    """Seconds per part, each called once alone on its captured inputs (fwd + bwd where it trains)."""
    core = trainer.core
    key = {
        "student": "encoder",
        "teacher": "teacher",
        "predictor": "predictor",
        "s1_encoder": "s1_branch",
        "fusion": "fusion",
        "prediction_loss": "loss_pred",
        "cross_modal_loss": "loss_cm",
        "sigreg": "loss_sig (SIGReg)",
        "fqs_head": "loss_fqs (FQS head)",
    }
    calls = component_calls(core, seen)
    out: dict[str, list[float]] = {n: [] for n in calls}
    out["optimizer"], out["ema"] = [], []
    inputs = {key[n]: v for n, v in seen.items() if n in key}
    for _ in range(1):
        for name, (fn, backward) in calls.items():
            args, kwargs = inputs[name]
            args, kwargs = (_with_grad(args), _with_grad(kwargs)) if backward else (args, kwargs)
            _sync(device)
            t0 = time.perf_counter()
            with torch.enable_grad() if backward else torch.no_grad(), trainer._autocast():
                result = fn(args, kwargs)
            if backward:
                ts = [t for t in _tensors(result) if t.requires_grad]
                if ts:
                    torch.autograd.backward([t.float().sum() for t in ts])
            _sync(device)
            out[name].append(time.perf_counter() - t0)
        trainer.optimizer.zero_grad(set_to_none=False)
        for p_ in trainer.trainable:
            if p_.grad is None:
                p_.grad = torch.zeros_like(p_)
        _sync(device)
        t0 = time.perf_counter()
        trainer.optimizer.step()
        _sync(device)
        out["optimizer"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        core.update_teacher(0.996)
        _sync(device)
        out["ema"].append(time.perf_counter() - t0)
    return {n: v[0] for n, v in out.items()}


def run_components(args, base, bsz: int, batch: dict, device: torch.device) -> None:
    """`--components`: per-part and whole-step times for each compile mode and optimiser (module docstring)."""
    modes = [m for m in args.compile_modes.split(",") if m]
    optims = [o for o in args.optimizers.split(",") if o]
    trainers = {}
    first_step, first_metrics = {}, {}
    for mode in modes:
        for opt in optims:
            cfg = apply_overrides(
                base, {"optim.batch_size": bsz, "optim.accumulation": 1, "optim.compile": mode == "compiled"}
            )
            torch.manual_seed(0)
            tr = Trainer(HQJEPA(cfg).to(device), cfg, steps_per_epoch=1000, device=device)
            if opt == "fused":
                from hqjepa.engine import build_optimizer

                groups = build_optimizer(tr.core, cfg).param_groups
                tr.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=True)
            _sync(device)
            t0 = time.perf_counter()
            first_metrics[(mode, opt)] = tr.train_step([batch])  # from the same initial weights (seed 0)
            _sync(device)
            first_step[(mode, opt)] = time.perf_counter() - t0
            trainers[(mode, opt)] = tr
    # the compiled step against the eager one: the same first step, same initial weights and batch
    diffs = {}
    if ("eager", optims[0]) in first_metrics and ("compiled", optims[0]) in first_metrics:
        ref, got = first_metrics[("eager", optims[0])], first_metrics[("compiled", optims[0])]
        diffs = {
            k: abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref if k.startswith("loss") or k == "grad_norm"
        }
    eager_tr = trainers[(modes[0], optims[0])]
    seen = _capture_inputs(eager_tr.core, batch, lambda: eager_tr.train_step([batch]))
    steps: dict[tuple, list[float]] = {k: [] for k in trainers}
    for _ in range(args.repeats):  # interleaved
        for k, tr in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            tr.train_step([batch])
            _sync(device)
            steps[k].append(time.perf_counter() - t0)
    rounds: dict[tuple, dict[str, list[float]]] = {k: {} for k in trainers}
    for r in range(args.repeats + 1):  # interleaved; round 0 warms up (and compiles the parts' shapes)
        for k, tr in trainers.items():
            for name, sec in time_components(tr, seen, device).items():
                if r:
                    rounds[k].setdefault(name, []).append(sec)
    comp = {k: {n: statistics.median(v) for n, v in per.items()} for k, per in rounds.items()}
    common = {
        "config": args.config,
        "batch": bsz,
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "precision": str(trainers[(modes[0], optims[0])].autocast_dtype or torch.float32).removeprefix("torch."),
    }
    for (mode, opt), parts in comp.items():
        step_s = statistics.median(steps[(mode, opt)])
        for name, sec in parts.items():
            print(
                record(
                    {
                        "bench": "step_components",
                        "compile": mode,
                        "optimizer": opt,
                        "component": name,
                        "median_ms": round(sec * 1e3, 3),
                        "share_of_step": round(sec / step_s, 4),
                        **common,
                    }
                )
            )
        print(
            record(
                {
                    "bench": "step_components",
                    "compile": mode,
                    "optimizer": opt,
                    "component": "whole step",
                    "median_ms": round(step_s * 1e3, 3),
                    "samples_per_s": round(bsz / step_s, 2),
                    "first_step_s": round(first_step[(mode, opt)], 2),
                    "compiled_modules": trainers[(mode, opt)].compiled,
                    **common,
                }
            )
        )
    base_key = (modes[0], optims[0])
    base_s = statistics.median(steps[base_key])
    print(
        record(
            {
                "bench": "step_components",
                "summary": True,
                **common,
                "step_ms": {f"{m}/{o}": round(statistics.median(steps[(m, o)]) * 1e3, 2) for m, o in trainers},
                "speedup_over_" + "/".join(base_key): {
                    f"{m}/{o}": round(base_s / statistics.median(steps[(m, o)]), 3) for m, o in trainers
                },
                "compiled_vs_eager_rel_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--batch", type=int, default=None, help="default: the config's optim.batch_size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override for every variant, e.g. model.mamba_backend=cuda (repeatable)",
    )
    p.add_argument(
        "--variants",
        default=",".join(v for v in VARIANTS if v != "gradnorm"),
        help="subset to time; the summary's shares need bare, +cm, +sig and full",
    )
    p.add_argument("--components", action="store_true", help="per-part times, eager vs compiled (module docstring)")
    p.add_argument("--compile-modes", default="eager,compiled", help="with --components: eager and/or compiled")
    p.add_argument("--optimizers", default="default", help="with --components: default and/or fused")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "full" not in names:
        p.error(f"--variants: {unknown or 'full is required'}; choose from {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = apply_overrides(load_config(args.config), dict(parse_override(t) for t in args.set))
    bsz = args.batch or base.optim.batch_size
    g = torch.Generator().manual_seed(0)
    masks = sample_masks(bsz, base.model.grid, base.mask, g)
    size = base.model.image_size
    batch = {
        "s2": torch.randn(bsz, len(base.model.s2_bands), size, size, generator=g),
        "s1": torch.randn(bsz, len(base.model.s1_bands), size, size, generator=g),
        **masks.as_dict(),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    if args.components:
        run_components(args, base, bsz, batch, device)
        return

    trainers = {}
    for name in names:
        over = VARIANTS[name]
        cfg = apply_overrides(base, {**over, "optim.batch_size": bsz, "optim.accumulation": 1})
        torch.manual_seed(0)
        trainers[name] = Trainer(HQJEPA(cfg).to(device), cfg, steps_per_epoch=1000, device=device)
        trainers[name].train_step([batch])  # warm-up (allocations, autotuning)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name, tr in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            tr.train_step([batch])
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}

    full = trainers["full"]
    with FlopCounterMode(display=False) as fc:
        full.train_step([batch])
    n_ctx = float(masks.ctx_valid.sum(1).float().mean())
    flops_step = fc.get_total_flops() + scan_flops(full.cfg, batch["s2"], n_ctx)
    peak_dtype = full.autocast_dtype or torch.float32
    peak = matmul_peak(device, peak_dtype, n=8192 if device.type == "cuda" else 2048)

    common = {
        "config": args.config,
        "batch": bsz,
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "precision": str(peak_dtype).removeprefix("torch."),
        "overrides": args.set,
        "mamba_backend": _scan_backend(full.cfg.model.mamba_backend, device),
    }
    for name in names:
        params = sum(p.numel() for p in trainers[name].core.parameters() if p.requires_grad)
        print(
            record(
                {
                    "bench": "step",
                    "variant": name,
                    **common,
                    "median_s": round(med[name], 4),
                    "samples_per_s": round(bsz / med[name], 2),
                    "trainable_params": params,
                }
            )
        )
    achieved = flops_step / med["full"]
    shares = {}
    if "bare" in med:
        shares.update(full_over_bare=round(med["full"] / med["bare"], 3), goal_full_over_bare=1.25)
    if "+sig" in med:
        shares.update(fqs_share_of_step=round((med["full"] - med["+sig"]) / med["full"], 4), goal_fqs_share=0.05)
    if "gradnorm" in med:
        shares.update(gradnorm_over_full=round(med["gradnorm"] / med["full"], 3))
    if {"bare", "+cm", "+sig"} <= med.keys():
        shares.update(
            cm_cost_over_bare=round((med["+cm"] - med["bare"]) / med["bare"], 3),
            sig_cost_over_bare=round((med["+sig"] - med["+cm"]) / med["bare"], 3),
        )
    print(
        record(
            {
                "bench": "step",
                "summary": True,
                **common,
                **shares,
                "full_samples_per_s": round(bsz / med["full"], 2),
                "model_gflop_per_sample": round(flops_step / bsz / 1e9, 3),
                "achieved_gflop_per_s": round(achieved / 1e9, 2),
                "matmul_peak_gflop_per_s": round(peak / 1e9, 2),
                "fraction_of_matmul_peak": round(achieved / peak, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
