"""Ray Train throughput with 1 and 2 workers on the same machine, in one run.

    python -m bench.train_scaling [--config configs/tiny.yaml] [--steps 12] [--workers 1 2]
                                  [--gpus-per-worker G] [--peak-tflops P]

Each setting runs ray_jobs/pretrain.py's job (Ray Data stream of synthetic shards -> TorchTrainer)
for --steps steps and reads its metrics.csv: global samples/s (median over steps after the first
two, which include start-up) and the mean data-wait fraction (time a step waited for its batch
over the step's wall time). With --gpus-per-worker, MFU = FLOPs/sample x samples/s / peak, with
FLOPs/sample counted as in bench/step.py and the peak given by --peak-tflops (bf16 dense peak of
the card) or measured with a bf16 matmul. Output: one JSON object per line, then the ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


ROOT = Path(__file__).resolve().parents[1]


def read_rows(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def flops_per_sample(config: str) -> float:
    """Forward + backward FLOPs of one sample of the full objective (bench/step.py's count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.step import scan_flops
    from hqjepa.config import apply_overrides, load_config
    from hqjepa.engine import Trainer
    from hqjepa.masks.multiblock import sample_masks
    from hqjepa.models.hqjepa import HQJEPA

    cfg = apply_overrides(load_config(config), {"optim.batch_size": 2, "optim.accumulation": 1})
    masks = sample_masks(2, cfg.model.grid, cfg.mask, 0)
    s = cfg.model.image_size
    batch = {"s2": torch.randn(2, 12, s, s), "s1": torch.randn(2, 2, s, s), **masks.as_dict()}
    trainer = Trainer(HQJEPA(cfg), cfg, steps_per_epoch=10)
    with FlopCounterMode(display=False) as fc:
        trainer.train_step([batch])
    n_ctx = float(masks.ctx_valid.sum(1).float().mean())
    return (fc.get_total_flops() + scan_flops(cfg, batch["s2"], n_ctx)) / 2


def main(argv: list[str] | None = None) -> None:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs/tiny.yaml"))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak per GPU for MFU")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)

    from ray_jobs import pretrain

    tmp = Path(tempfile.mkdtemp(prefix="hqjepa-scaling-"))
    results = {}
    for n in args.workers:
        name = f"scaling-{n}w"
        argv = [
            "--config",
            args.config,
            "--workers",
            str(n),
            "--max-steps",
            str(args.steps),
            "--storage",
            str(tmp),
            "--experiment",
            name,
            "--cache-dir",
            str(ROOT / "runs" / "data"),
            "--set",
            f"train.checkpoint_every={args.steps}",
        ]
        if args.gpus_per_worker:
            argv += ["--gpus-per-worker", str(args.gpus_per_worker)]
        for s in args.set:
            argv += ["--set", s]
        pretrain.main(argv)
        rows = read_rows(tmp / name / "metrics.csv")[2:] or read_rows(tmp / name / "metrics.csv")
        per_step = [r["samples"] * n / (r["step_time_s"] + r["data_wait_s"]) for r in rows]
        results[n] = {
            "bench": "train_scaling",
            "workers": n,
            "config": args.config,
            "steps": args.steps,
            "per_worker_batch": int(rows[0]["samples"]),
            "global_samples_per_s": round(statistics.median(per_step), 3),
            "data_wait_fraction": round(statistics.fmean(r["data_wait_fraction"] for r in rows), 4),
            "step_time_s": round(statistics.median(r["step_time_s"] for r in rows), 3),
        }
        print(record(results[n]), flush=True)
    if len(results) >= 2:
        lo, hi = min(results), max(results)
        print(
            record(
                {
                    "bench": "train_scaling",
                    "summary": True,
                    f"speedup_{hi}w_over_{lo}w": round(
                        results[hi]["global_samples_per_s"] / results[lo]["global_samples_per_s"], 3
                    ),
                }
            )
        )
    if args.gpus_per_worker:
        import torch

        fps = flops_per_sample(args.config)
        peak = args.peak_tflops * 1e12 if args.peak_tflops else _bf16_peak()
        for n, r in results.items():
            print(
                record(
                    {
                        "bench": "train_scaling",
                        "workers": n,
                        "gflop_per_sample": round(fps / 1e9, 3),
                        "mfu": round(fps * r["global_samples_per_s"] / (n * peak), 4),
                        "peak_tflops": round(peak / 1e12, 1),
                        "gpu": torch.cuda.get_device_name(0),
                    }
                )
            )


def _bf16_peak() -> float:
    import time

    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize()
        t = time.perf_counter()
        a @ a
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * 8192**3 / best


if __name__ == "__main__":
    main()
