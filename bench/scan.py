"""Benchmark: pure-PyTorch selective scan, forward + backward, against the sequential reference
and against mambapy's parallel scan (when `mambapy` is importable).

Every variant does the same work: delta = softplus(delta + delta_bias), discretisation, the scan,
the contraction with C, the D skip and the silu(z) gate, then backward to all eight inputs.
Each variant runs in a fresh subprocess so its peak memory is honest: the peak resident set
size (ru_maxrss) during its first forward+backward, minus the resident size just before it
(inputs already built). Time is the median of --repeats further runs.

    python bench/scan.py                              # paper sizes: batch 64, d_inner 768, L 144
    python bench/scan.py --batch 8 --d-inner 192      # quicker

Prints one JSON line per variant and one with the ratios (sequential / chunked and
mambapy / chunked: > 1 means the chunked scan is faster or lighter). Goal (issue 2): time and
memory ratios against mambapy >= 1. mambapy is optional: without it its line says "skipped".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("chunked", "sequential", "mambapy")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(a):
    import torch
    g = torch.Generator().manual_seed(0)
    b, d, n, L = a.batch, a.d_inner, a.d_state, a.seqlen

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).requires_grad_()
    A = (-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)).requires_grad_()  # S4D-real init
    return dict(u=r(b, d, L), delta=r(b, d, L, scale=0.5), A=A, B=r(b, n, L), C=r(b, n, L),
                D=r(d), z=r(b, d, L), delta_bias=r(d, scale=0.5))


def _mambapy_fn():
    """mambapy's selective scan, fed the same work as ours (mambapy/mamba.py, selective_scan)."""
    import torch
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    def run(u, delta, A, B, C, D, z, delta_bias):
        delta = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)      # (B, L, ED)
        x = u.transpose(1, 2)
        deltaA = torch.exp(delta.unsqueeze(-1) * A)                           # (B, L, ED, N)
        BX = delta.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * x.unsqueeze(-1)
        hs = pscan(deltaA, BX)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(3) + D * x         # (B, L, ED)
        return (y * F.silu(z.transpose(1, 2))).transpose(1, 2)
    return run


def worker(a) -> dict:
    import torch
    torch.set_num_threads(a.threads or torch.get_num_threads())
    sys.path.insert(0, ROOT)
    from hqjepa.models.selective_scan import selective_scan, selective_scan_sequential
    if a.variant == "mambapy":
        try:
            fn = _mambapy_fn()
        except ImportError as e:
            return {"variant": "mambapy", "skipped": f"mambapy not importable ({e})"}
    elif a.variant == "chunked":
        def fn(**kw):
            return selective_scan(**kw, delta_softplus=True, chunk_size=a.chunk_size)
    else:
        def fn(**kw):
            return selective_scan_sequential(**kw, delta_softplus=True)
    kw = _inputs(a)
    leaves = list(kw.values())
    gy = torch.randn(a.batch, a.d_inner, a.seqlen, generator=torch.Generator().manual_seed(1))

    def step():
        out = fn(**kw) if a.variant != "mambapy" else fn(*leaves)
        torch.autograd.grad(out, leaves, gy)

    # A tiny warm-up loads kernels and thread pools, so the peak below is this variant's own.
    small = argparse.Namespace(**{**vars(a), "batch": 1, "d_inner": 8, "seqlen": 8})
    sk = _inputs(small)
    out = fn(**sk) if a.variant != "mambapy" else fn(*sk.values())
    out.sum().backward()
    del sk, out
    base = _rss_bytes()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"variant": a.variant, "batch": a.batch, "d_inner": a.d_inner, "d_state": a.d_state,
            "seqlen": a.seqlen, "threads": torch.get_num_threads(),
            "fwd_bwd_s": round(statistics.median(times), 4), "peak_mem_mib": round(peak / 2**20, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--d-inner", type=int, default=768)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=144)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--chunk-size", type=int, default=None, help="chunked scan's chunk (default ~sqrt(L))")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--variant", help=argparse.SUPPRESS)        # internal: run one variant here
    a = p.parse_args()
    if a.variant:
        print(json.dumps(worker(a)))
        return 0
    res = {}
    for v in a.variants.split(","):
        args = [sys.executable, os.path.abspath(__file__), "--variant", v] + [
            f"--{k.replace('_', '-')}={getattr(a, k)}" for k in
            ("batch", "d_inner", "d_state", "seqlen", "repeats", "threads") ]
        if a.chunk_size:
            args.append(f"--chunk-size={a.chunk_size}")
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode != 0:
            res[v] = {"variant": v, "error": out.stderr.strip().splitlines()[-1:]}
        else:
            res[v] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(res[v]), flush=True)
    ours = res.get("chunked", {})
    ratios = {"ratios": "other / chunked (>1: chunked faster or lighter)"}
    for v in ("sequential", "mambapy"):
        other = res.get(v, {})
        if "fwd_bwd_s" in ours and "fwd_bwd_s" in other:
            ratios[f"{v}_time"] = round(other["fwd_bwd_s"] / ours["fwd_bwd_s"], 3)
            ratios[f"{v}_mem"] = round(other["peak_mem_mib"] / max(ours["peak_mem_mib"], 1e-9), 3)
    if "mambapy_time" in ratios:
        ratios["goal_met"] = ratios["mambapy_time"] >= 1.0 and ratios["mambapy_mem"] >= 1.0
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
