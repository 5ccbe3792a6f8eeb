"""CUDA checks and timings that the CPU suite cannot make: selective scans, FQS, NCCL.

    python -m bench.gpu [--sections scan,fqs,nccl] [--repeats 20]

scan  paper sizes (batch 64, d_inner 768, d_state 16, L 144, float32, forward + backward to all
      eight inputs): our chunked scan, our sequential scan and, when mamba-ssm's kernels import,
      upstream's `selective_scan_fn`; median time (CUDA-synchronised), peak memory above the
      inputs (torch.cuda.max_memory_allocated), and the largest difference of outputs and
      gradients from upstream's kernel (or from the sequential scan without it).
fqs   the statevector backend on CUDA, forward + backward, float32 and float64, at batches 1,024,
      16,384 and 131,072 (samples/s), and its difference from the CPU float64 result.
nccl  an NCCL process group of one rank (this machine has one GPU): SIGReg's gradient-carrying
      all-reduce on CUDA tensors, values and gradients.
Prints one JSON object per line. `bench/gpu.sh` runs this with the other device checks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from bench.scan import _inputs
from hqjepa.models.mamba import _cuda_kernels
from hqjepa.models.selective_scan import selective_scan, selective_scan_sequential
from hqjepa.provenance import provenance
from hqjepa.quantum.fidelity import swap_test_fidelity

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


DEVICE = "cuda"  # --device cpu: a dry run of the script's logic on a machine without a GPU


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - t0)
    return out


def scan_inputs(b: int, d: int, n: int, L: int, device: str) -> dict[str, torch.Tensor]:
    """bench/scan.py's inputs (same seed and scales), as leaves on `device`."""
    kw = _inputs(argparse.Namespace(batch=b, d_inner=d, d_state=n, seqlen=L))
    return {k: v.detach().to(device).requires_grad_() for k, v in kw.items()}


def bench_scan(args) -> None:
    kernels = _cuda_kernels()
    variants = {"chunked": selective_scan, "sequential": selective_scan_sequential}
    if isinstance(kernels, str):
        print(record({"bench": "gpu_scan", "variant": "upstream", "skipped": kernels}), flush=True)
    else:
        variants["upstream"] = kernels[0]
    b, d, n, L = args.scan_shape
    kw = scan_inputs(b, d, n, L, DEVICE)
    leaves = list(kw.values())
    gy = torch.randn(b, d, L, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    results = {}
    for name, fn in variants.items():

        def step(fn=fn):  # bound now: called within this iteration only
            out = fn(**kw, delta_softplus=True)
            return out, torch.autograd.grad(out, leaves, gy)

        step()  # warm-up (kernel loads, autotuning)
        _sync()
        cuda = DEVICE == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        out, grads = step()
        _sync()
        peak = torch.cuda.max_memory_allocated() - base if cuda else float("nan")
        results[name] = (out.detach(), [g.detach() for g in grads])
        del out, grads
        t = _time(step, args.repeats)
        print(
            record(
                {
                    "bench": "gpu_scan",
                    "variant": name,
                    "shape": f"b{b} d{d} n{n} L{L} fp32 fwd+bwd",
                    "median_ms": round(1e3 * statistics.median(t), 3),
                    "min_ms": round(1e3 * min(t), 3),
                    "peak_mem_mib": round(peak / 2**20, 1),
                }
            ),
            flush=True,
        )
    ref_name = "upstream" if "upstream" in results else "sequential"
    ref_out, ref_grads = results[ref_name]
    names = list(kw)
    for name, (out, grads) in results.items():
        if name == ref_name:
            continue
        rel = {"out": _rel(out, ref_out)} | {
            f"grad_{k}": _rel(g, r) for k, g, r in zip(names, grads, ref_grads, strict=True)
        }
        print(
            record(
                {
                    "bench": "gpu_scan",
                    "compare": f"{name} vs {ref_name}",
                    "max_rel_err": round(max(rel.values()), 8),
                    "per_tensor": {k: round(v, 8) for k, v in rel.items()},
                }
            ),
            flush=True,
        )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: one number per tensor, immune to near-zero entries."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def fqs_angles(batch: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, L, 5, 3, generator=g, dtype=torch.float64) * 6.28 - 3.14).to(device, dtype).requires_grad_()
        for L in (2, 2, 1)
    ]


def bench_fqs(args) -> None:
    # correctness against the CPU in float64
    cpu = fqs_angles(256, torch.float64, "cpu")
    f_cpu = swap_test_fidelity(*cpu)
    g_cpu = torch.autograd.grad(f_cpu.sum(), cpu)
    gpu = fqs_angles(256, torch.float64, DEVICE)
    f_gpu = swap_test_fidelity(*gpu)
    g_gpu = torch.autograd.grad(f_gpu.sum(), gpu)
    err = max(
        [float((f_gpu.detach().cpu() - f_cpu.detach()).abs().max())]
        + [float((a.cpu() - b).abs().max()) for a, b in zip(g_gpu, g_cpu, strict=True)]
    )
    print(
        record({"bench": "gpu_fqs", "check": "cuda float64 vs cpu float64, values and grads", "max_abs_err": err}),
        flush=True,
    )
    for dtype in (torch.float32, torch.float64):
        for batch in args.fqs_batches:
            angles = fqs_angles(batch, dtype, DEVICE)

            def step(angles=angles):  # bound now: called within this iteration only
                f = swap_test_fidelity(*angles)
                torch.autograd.grad(f.sum(), angles)

            for _ in range(3):
                step()
            t = _time(step, args.repeats)
            med = statistics.median(t)
            print(
                record(
                    {
                        "bench": "gpu_fqs",
                        "backend": "statevector",
                        "dtype": str(dtype)[6:],
                        "batch": batch,
                        "median_ms": round(1e3 * med, 3),
                        "samples_per_s": round(batch / med),
                        "samples_per_s_best": round(batch / min(t)),
                    }
                ),
                flush=True,
            )


def bench_nccl(args) -> None:
    import torch.distributed as dist

    from hqjepa.losses.sigreg import SIGReg, _AllReduceSum

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        x = torch.randn(1000, device="cuda", requires_grad=True)
        y = _AllReduceSum.apply(x)
        (g,) = torch.autograd.grad((y * 2).sum(), x)
        z = torch.randn(512, 384, device="cuda", requires_grad=True)
        loss = SIGReg(num_slices=256).cuda()(z, step=3)
        loss.backward()
        print(
            record(
                {
                    "bench": "gpu_nccl",
                    "backend": dist.get_backend(),
                    "world": dist.get_world_size(),
                    "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                    "all_reduce_value_ok": bool(torch.equal(y, x)),
                    "all_reduce_grad_ok": bool((g == 2).all()),
                    "sigreg": round(float(loss), 4),
                    "sigreg_grad_finite": bool(z.grad.isfinite().all()),
                }
            ),
            flush=True,
        )
    finally:
        dist.destroy_process_group()


SECTIONS = {"scan": bench_scan, "fqs": bench_fqs, "nccl": bench_nccl}


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--scan-shape", type=int, nargs=4, default=[64, 768, 16, 144], metavar=("B", "D", "N", "L"))
    p.add_argument("--fqs-batches", type=int, nargs="+", default=[1024, 16384, 131072])
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        SECTIONS.pop("nccl", None)
        args.sections = ",".join(s for s in args.sections.split(",") if s != "nccl")
    elif not torch.cuda.is_available():
        print(record({"bench": "gpu", "skipped": "no CUDA device"}))
        return 1
    print(
        record(
            {
                "bench": "gpu",
                "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "capability": torch.cuda.get_device_capability() if DEVICE == "cuda" else None,
            }
        ),
        flush=True,
    )
    status = 0
    for name in args.sections.split(","):
        try:
            SECTIONS[name](args)
        except Exception as e:  # one failed section must not hide the others' figures
            print(record({"bench": f"gpu_{name}", "error": f"{type(e).__name__}: {e}"}), flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
