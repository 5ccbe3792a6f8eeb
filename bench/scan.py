"""Benchmark: pure-PyTorch selective scan, forward + backward, against the sequential reference
and against mambapy's parallel scan (when `mambapy` is importable).

Every variant does the same work: delta = softplus(delta + delta_bias), discretisation, the scan,
the contraction with C, the D skip and the silu(z) gate, then backward to all eight inputs.
Each variant runs in a fresh subprocess so its peak memory is honest: the peak resident set
size (ru_maxrss) during its first forward+backward, minus the resident size just before it
(inputs already built), after a tiny warm-up. Time: --repeats further runs per subprocess,
--rounds subprocesses per variant interleaved with the others; the line gives the minimum
(least disturbed by other load) and the median wall time, and the minimum process CPU time.

    python -m bench.scan                              # paper sizes: batch 64, d_inner 768, L 144
    python -m bench.scan --batch 8 --d-inner 192      # quicker

Prints one JSON line per variant and one with the ratios (sequential / chunked and
mambapy / chunked: > 1 means the chunked scan is faster or lighter). Goal: time and
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

from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


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
    return dict(
        u=r(b, d, L),
        delta=r(b, d, L, scale=0.5),
        A=A,
        B=r(b, n, L),
        C=r(b, n, L),
        D=r(d),
        z=r(b, d, L),
        delta_bias=r(d, scale=0.5),
    )


def _mambapy_fn():
    """mambapy's selective scan, fed the same work as ours (mambapy/mamba.py, selective_scan)."""
    import torch
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    def run(u, delta, A, B, C, D, z, delta_bias):
        delta = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (B, L, ED)
        x = u.transpose(1, 2)
        deltaA = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, ED, N)
        BX = delta.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * x.unsqueeze(-1)
        hs = pscan(deltaA, BX)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(3) + D * x  # (B, L, ED)
        return (y * F.silu(z.transpose(1, 2))).transpose(1, 2)

    return run


def worker(a) -> dict:
    import torch

    torch.set_num_threads(a.threads or torch.get_num_threads())
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
    wall, cpu = [], []
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"variant": a.variant, "wall_s": wall, "cpu_s": cpu, "peak_mem_mib": round(peak / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--d-inner", type=int, default=768)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=144)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per subprocess")
    p.add_argument("--rounds", type=int, default=2, help="fresh subprocesses per variant, interleaved")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--chunk-size", type=int, default=None, help="chunked scan's chunk (default ~sqrt(L))")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant here
    a = p.parse_args(argv)
    if a.variant:
        print(json.dumps(worker(a)))  # read by main(), not a record
        return 0
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    # Rounds interleave the variants, so load from other processes hits them alike; the
    # minimum over all timed runs is the least disturbed estimate (load only adds time).
    variants = a.variants.split(",")
    runs: dict[str, list] = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            args = [sys.executable, "-m", "bench.scan", "--variant", v] + [
                f"--{k.replace('_', '-')}={getattr(a, k)}"
                for k in ("batch", "d_inner", "d_state", "seqlen", "repeats", "threads")
            ]
            if a.chunk_size:
                args.append(f"--chunk-size={a.chunk_size}")
            out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)  # bench and hqjepa importable
            if out.returncode != 0:
                runs[v].append({"error": (out.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                runs[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = {}
    for v in variants:
        ok = [r for r in runs[v] if "wall_s" in r]
        line = {
            "variant": v,
            "batch": a.batch,
            "d_inner": a.d_inner,
            "d_state": a.d_state,
            "seqlen": a.seqlen,
            "threads": a.threads or "default",
        }
        if not ok:
            line.update(runs[v][0])
        else:
            wall = [t for r in ok for t in r["wall_s"]]
            line.update(
                fwd_bwd_s=round(min(wall), 4),
                fwd_bwd_median_s=round(statistics.median(wall), 4),
                cpu_s=round(min(t for r in ok for t in r["cpu_s"]), 4),
                peak_mem_mib=min(r["peak_mem_mib"] for r in ok),
                runs=len(wall),
            )
        res[v] = line
        print(record(line), flush=True)
    ours = res.get("chunked", {})
    ratios = {"ratios": "other / chunked (>1: chunked faster or lighter)"}
    for v in ("sequential", "mambapy"):
        other = res.get(v, {})
        if "fwd_bwd_s" in ours and "fwd_bwd_s" in other:
            for key, name in (("fwd_bwd_s", "time"), ("cpu_s", "cpu"), ("peak_mem_mib", "mem")):
                ratios[f"{v}_{name}"] = round(other[key] / max(ours[key], 1e-9), 3)
    if "mambapy_time" in ratios:
        ratios["goal_met"] = ratios["mambapy_time"] >= 1.0 and ratios["mambapy_mem"] >= 1.0
    print(record(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
