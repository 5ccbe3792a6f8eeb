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
