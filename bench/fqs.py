"""FQS fidelity throughput, forward + backward: statevector vs PennyLane (per-sample adjoint, broadcast).

Prints one JSON object per line: one per (backend, dtype, device) with samples/s, then the ratios
measured in this run. The PennyLane paths are slow, so they time a subset and report samples/s
over that subset (per-sample adjoint: `--adjoint-samples` circuits one after another, which is
exactly how a full batch runs; broadcast: one execution of `--broadcast-batch` samples).

    python -m bench.fqs                  # B = 1024, CPU
    python -m bench.fqs --cuda           # also the statevector backend on CUDA

samples_per_s is from the median time of the repeats, samples_per_s_best from the fastest; the
ratios use the same statistic on both sides (PennyLane runs once, so its median = best).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

from hqjepa.provenance import provenance
from hqjepa.quantum.fidelity import swap_test_fidelity

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


def _angles(batch: int, l_enc: int, l_pred: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for layers in (l_enc, l_enc, l_pred):
        x = (torch.rand(batch, layers, 5, 3, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
        out.append(x.to(dtype=dtype, device=device).requires_grad_())
    return out


def _step(backend: str, angles, pl_device: str) -> None:
    for a in angles:
        a.grad = None
    swap_test_fidelity(*angles, backend=backend, device=pl_device).sum().backward()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_backend(
    backend: str,
    batch: int,
    dtype: torch.dtype,
    device: str,
    l_enc: int,
    l_pred: int,
    repeats: int,
    warmup: int,
    pl_device: str = "default.qubit",
) -> dict:
    angles = _angles(batch, l_enc, l_pred, dtype, device)
    # the PennyLane paths warm up (QNode construction, first-call caches) on a few samples only
    warm = angles if backend == "statevector" else _angles(2, l_enc, l_pred, dtype, device)
    for _ in range(warmup):
        _step(backend, warm, pl_device)
    _sync(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        _step(backend, angles, pl_device)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    best, median = min(times), statistics.median(times)
    return {
        "bench": "fqs",
        "backend": backend,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "timed_batch": batch,
        "repeats": repeats,
        "ms_per_timed_batch": round(median * 1e3, 3),
        # CPU time of this process (all its threads): less sensitive to other load
        "cpu_ms_per_timed_batch": round(statistics.median(cpu_times) * 1e3, 3),
        "samples_per_s": round(batch / median, 1),
        "samples_per_s_best": round(batch / best, 1),
    }


def main(argv: list[str] | None = None) -> None:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--enc-layers", type=int, default=2)
    parser.add_argument("--pred-layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="statevector timing repeats")
    parser.add_argument("--adjoint-samples", type=int, default=16)
    parser.add_argument(
        "--broadcast-batch", type=int, default=None, help="samples in the timed broadcast execution (default: --batch)"
    )
    parser.add_argument(
        "--device", default="default.qubit", help="PennyLane device for the broadcast path and the first adjoint row"
    )
    parser.add_argument(
        "--adjoint-devices",
        default="default.qubit,lightning.qubit",
        help="PennyLane devices timed per sample with adjoint (missing ones skipped)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cuda", action="store_true", help="also time the statevector on CUDA")
    parser.add_argument("--skip-pennylane", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = (args.enc_layers, args.pred_layers)
    print(
        record(
            {
                "bench": "fqs",
                "setup": True,
                "batch": args.batch,
                "enc_layers": layers[0],
                "pred_layers": layers[1],
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "processor": platform.processor() or None,
            }
        ),
        flush=True,
    )

    rows: dict[str, dict] = {}
    # The simulator's ops are small: on a busy machine one intra-op thread can beat two, so the
    # CPU statevector is timed with 1 thread and with the default count.
    default_threads = torch.get_num_threads()
    cpu_threads = sorted({1, default_threads})
    for device in ["cpu"] + (["cuda"] if args.cuda and torch.cuda.is_available() else []):
        for threads in cpu_threads if device == "cpu" else [default_threads]:
            torch.set_num_threads(threads)
            for dtype in (torch.float32, torch.float64):
                row = time_backend("statevector", args.batch, dtype, device, *layers, repeats=args.repeats, warmup=5)
                row["torch_threads"] = threads
                rows[f"statevector_{row['dtype']}_{device}_{threads}thr"] = row
                print(record(row), flush=True)
    torch.set_num_threads(default_threads)
    if args.cuda and not torch.cuda.is_available():
        print(record({"bench": "fqs", "cuda": "not available"}), flush=True)

    if not args.skip_pennylane:
        import pennylane as qml

        refs = []
        adjoint_devices = [args.device] + [d for d in args.adjoint_devices.split(",") if d and d != args.device]
        for pl_device in adjoint_devices:
            try:
                qml.device(pl_device, wires=11)
            except Exception as err:  # a plugin that is not installed: say so and go on
                print(
                    record({"bench": "fqs", "pennylane_device": pl_device, "skipped": f"{type(err).__name__}: {err}"}),
                    flush=True,
                )
                continue
            row = time_backend(
                "pennylane",
                args.adjoint_samples,
                torch.float32,
                "cpu",
                *layers,
                repeats=1,
                warmup=1,
                pl_device=pl_device,
            )
            row.update(
                pennylane=qml.__version__,
                pennylane_device=pl_device,
                diff_method="adjoint",
                note="per-sample loop; any batch runs at this rate",
            )
            rows[f"pennylane_adjoint_{pl_device}"] = row
            refs.append(f"pennylane_adjoint_{pl_device}")
            print(record(row), flush=True)
        bc = args.broadcast_batch or args.batch
        row = time_backend(
            "pennylane_broadcast", bc, torch.float32, "cpu", *layers, repeats=1, warmup=1, pl_device=args.device
        )
        row.update(
            pennylane=qml.__version__,
            pennylane_device=args.device,
            diff_method="backprop",
            note=f"one broadcast execution of {bc} samples",
        )
        rows["pennylane_broadcast"] = row
        refs.append("pennylane_broadcast")
        print(record(row), flush=True)
        for sv in [k for k in rows if k.startswith("statevector")]:
            for ref in refs:
                ratio = rows[sv]["samples_per_s"] / rows[ref]["samples_per_s"]
                best = rows[sv]["samples_per_s_best"] / rows[ref]["samples_per_s_best"]
                print(
                    record(
                        {"bench": "fqs", "ratio": f"{sv}/{ref}", "value": round(ratio, 1), "value_best": round(best, 1)}
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
