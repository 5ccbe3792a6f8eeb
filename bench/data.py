"""Data path benchmark: archive -> shards -> Ray Data -> torch, against its goals, in one run.

    python -m bench.data [--pairs 512] [--shard-size 256] [--batch 32] [--config configs/tiny.yaml]
                         [--steps 3] [--workdir DIR]

Writes a synthetic v1 archive of `--pairs` pairs, then prints one JSON object per line:
  convert_pairs_per_s_per_core   in-process conversion (1 core) and Ray tasks (all cores, per core)
  bytes_per_pair                 shard bytes on disk per pair (goal <= 200 KB; naive float32 ~690 KB)
  read_pyarrow_batches_per_s     plain pyarrow read + the same decode + collate, one process
  read_ray_batches_per_s         ray.data.read_parquet -> map_batches(decode) -> iter_torch_batches
                                 (warm epoch incl. its start-up; goal >= 50 % of the plain pyarrow read)
                                 Both readers go over the shard list repeated to `--stream-rows` rows.
                                 Shards default to the converter's 256 pairs: Ray Data re-plans its read
                                 tasks every epoch (one ray.put and location lookup per file), so smaller
                                 shards cost more per row (64-pair shards measured 0.43-0.48 against
                                 0.59-0.62 at 256 on this 2-core machine).
  train_step_samples_per_s       what one CPU training worker consumes (`--config`, 1 thread)
  pipeline_over_consumer         Ray Data rows/s over training samples/s (goal >= 3)
Ratios are measured in the same run. Timings on a shared machine are noisy; rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from hqjepa.config import load_config
from hqjepa.data.collate import MaskCollator
from hqjepa.data.convert import convert_archive, convert_shard, finalise, plan_conversion
from hqjepa.data.shards import BANDS, load_manifest, shard_files
from hqjepa.data.stream import STREAM_COLUMNS, block_decoder
from hqjepa.data.synth_archive import write_archive
from hqjepa.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
# read by ray.data when it is first imported (inside the benchmarks below, never by hqjepa)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


NAIVE_S2_BYTES = 12 * 120 * 120 * 4  # the size goal's reference: 12 S2 bands as float32 at 120 px
NAIVE_BYTES = len(BANDS) * 120 * 120 * 4  # all 14 bands (S2 + S1) as float32 at 120 px


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(record({"bench": "data", "metric": metric, "value": round(value, 4), "unit": unit, **extra}), flush=True)


def bench_convert(archive: Path, work: Path, shard_size: int) -> Path:
    cores = os.cpu_count() or 1
    out1 = work / "shards-1core"
    t0 = time.perf_counter()
    summary = convert_archive(archive, out1, shard_size=shard_size, progress=False)
    dt = time.perf_counter() - t0
    emit(
        "convert_pairs_per_s_per_core",
        summary.converted / dt,
        "pairs/s/core",
        mode="in-process, 1 core",
        pairs=summary.converted,
        seconds=round(dt, 2),
    )

    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    out = work / "shards"
    plan = plan_conversion(archive, out, shard_size=shard_size)
    remote = ray.remote(num_cpus=1)(convert_shard)
    ray.get(remote.remote(plan.pending[0]))  # warm the worker processes (imports)
    shutil.rmtree(out)
    plan = plan_conversion(archive, out, shard_size=shard_size)
    t0 = time.perf_counter()
    results = ray.get([remote.remote(t) for t in plan.pending])
    summary = finalise(plan, results)
    dt = time.perf_counter() - t0
    emit(
        "convert_pairs_per_s_per_core",
        summary.converted / dt / cores,
        "pairs/s/core",
        mode=f"ray tasks, {cores} cores",
        pairs_per_s=round(summary.converted / dt, 2),
        seconds=round(dt, 2),
    )

    per_pair = summary.bytes / summary.converted
    emit(
        "bytes_per_pair",
        per_pair / 1000,
        "KB",
        goal="<= 200",
        ok=per_pair <= 200_000,
        naive_s2_float32_kb=NAIVE_S2_BYTES / 1000,
        naive_s1s2_float32_kb=NAIVE_BYTES / 1000,
        ratio_to_naive_s1s2=round(per_pair / NAIVE_BYTES, 3),
    )
    return out


def bench_read(shards: Path, batch: int, mask_cfg, grid: int, stream_rows: int) -> float:
    """Plain pyarrow vs Ray Data over the same shards, each hard-linked under several names until
    the stream holds about `stream_rows` rows, so a small benchmark archive still gives a stream
    long enough to measure (Ray drops duplicate paths, hence links; both readers hit the page cache)."""
    import pyarrow as pa
    import ray

    from hqjepa.data.stream import training_pipeline
    from ray_jobs._data import MaskCollateFn, read_shards

    manifest = load_manifest(shards)
    files = shard_files(shards)
    repeats = max(1, -(-stream_rows // manifest["pairs"]))
    links = shards.parent / "stream"
    links.mkdir(exist_ok=True)
    linked = []
    for r in range(repeats):
        for f in files:
            dst = links / f"r{r:03d}-{Path(f).name}"
            if not dst.exists():
                os.link(f, dst)
            linked.append(str(dst))
    files = linked
    decode = block_decoder(manifest, split=None)
    collate = MaskCollator(mask_cfg, grid, seed=0)

    def plain_epoch() -> tuple[int, int]:
        rows = batches = 0
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=64, columns=list(STREAM_COLUMNS)):
                arrays = decode(pa.Table.from_batches([rb]))
                for i in range(0, len(arrays["s2"]), batch):
                    out = collate({k: v[i : i + batch] for k, v in arrays.items()})
                    rows += out["s2"].shape[0]
                    batches += 1
        return rows, batches

    torch.set_num_threads(1)  # the plain reader is one process on one core, like one loader
    t0 = time.perf_counter()
    rows, batches = plain_epoch()
    plain = batches / (time.perf_counter() - t0)
    emit(
        "read_pyarrow_batches_per_s",
        plain,
        "batches/s",
        rows_per_s=round(plain * rows / batches, 2),
        batch=batch,
        rows=rows,
        threads=1,
    )
    torch.set_num_threads(os.cpu_count() or 1)

    # exactly ray_jobs/_data.training_dataset, on the repeated file list
    ds = training_pipeline(read_shards(files), manifest, split=None)

    def ray_epoch() -> tuple[int, int, float, float]:
        rows = batches = 0
        t0 = time.perf_counter()
        first = None
        for out in ds.iterator().iter_torch_batches(batch_size=batch, collate_fn=MaskCollateFn(mask_cfg, grid)):
            rows += out["s2"].shape[0]
            batches += 1
            first = first or time.perf_counter() - t0
        return rows, batches, time.perf_counter() - t0, first

    ray_epoch()  # cold: worker start-up, imports
    rows, batches, seconds, first = ray_epoch()
    rate = batches / seconds
    emit(
        "read_ray_batches_per_s",
        rate,
        "batches/s",
        rows_per_s=round(rate * rows / batches, 2),
        ratio_to_pyarrow=round(rate / plain, 3),
        goal="ratio >= 0.5",
        ok=rate / plain >= 0.5,
        rows=rows,
        first_batch_s=round(first, 2),
        ray_cpus=int(ray.cluster_resources().get("CPU", 0)),
    )
    return rate * rows / batches


def bench_consumer(config: str, batch: int, steps: int) -> float | None:
    try:
        from hqjepa.engine import Trainer
        from hqjepa.models.hqjepa import HQJEPA
    except ImportError as e:
        emit("train_step_samples_per_s", float("nan"), "samples/s", status=f"pending: {e}")
        return None
    from hqjepa.data.dataset import SyntheticPairs

    cfg = load_config(config)
    torch.set_num_threads(1)  # one CPU training worker
    torch.manual_seed(0)
    model = HQJEPA(cfg)
    trainer = Trainer(model, cfg, steps_per_epoch=1000)
    data = SyntheticPairs(batch, seed=0)
    mb = MaskCollator(cfg.mask, cfg.model.grid, seed=0)(data.__getitems__(range(batch)))
    trainer.train_step([mb])  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step([mb])
        times.append(time.perf_counter() - t0)
    rate = batch / float(np.median(times))
    emit(
        "train_step_samples_per_s",
        rate,
        "samples/s",
        config=config,
        batch=batch,
        threads=1,
        step_s=round(float(np.median(times)), 3),
    )
    torch.set_num_threads(os.cpu_count() or 1)
    return rate


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--shard-size", type=int, default=256, help="pairs per shard (ray_jobs/convert.py's default)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--steps", type=int, default=3, help="timed training steps (median)")
    p.add_argument("--stream-rows", type=int, default=2048, help="rows per read epoch (shards repeated)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hqjepa-bench-data-"))
    try:
        archive = work / "archive"
        t0 = time.perf_counter()
        write_archive(archive, args.pairs, "v1", seed=0)
        emit("synth_archive_pairs_per_s", args.pairs / (time.perf_counter() - t0), "pairs/s", pairs=args.pairs)
        shards = bench_convert(archive, work, args.shard_size)
        cfg = load_config(args.config)
        pipeline = bench_read(shards, args.batch, cfg.mask, cfg.model.grid, args.stream_rows)
        consumer = bench_consumer(args.config, args.batch, args.steps)
        if consumer is not None:
            emit(
                "pipeline_over_consumer",
                pipeline / consumer,
                "ratio",
                goal=">= 3",
                ok=pipeline / consumer >= 3,
                pipeline_rows_per_s=round(pipeline, 2),
                consumer_samples_per_s=round(consumer, 2),
            )
        else:
            emit("pipeline_over_consumer", float("nan"), "ratio", status="pending: hqjepa.engine not available")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
