"""Data path benchmark: archive -> shards -> Ray Data -> torch, against its goals, in one run.

    python -m bench.data [--pairs 1024] [--shard-size 1024] [--compare-shard-size 256] [--batch 32]
                         [--config configs/tiny.yaml] [--steps 3] [--workdir DIR]
                         [--parts convert,convert-memory,layouts,cpu,allocator,read,consumer] [--rounds 3]
                         [--cpu-stream-rows 32768] [--v1-stream-rows 4096]

Writes a synthetic v1 archive of `--pairs` pairs, then prints one JSON object per line.

CPU cost of the input pipeline (`--parts cpu`), the throughput goal at GPU scale. Everything from
the shard files up to the tensors handed to the training step is measured as CPU time, not wall
time: the utime + stime (from /proc/PID/stat) of this process and of every process descended from
it (the raylet, the GCS, Ray's agents and every Ray worker that ran read tasks), summed over the
warm epoch, so the Ray Data workers' reads, the object store, Ray's scheduling and the batch
assembly in this process all count, and so does anything else those processes did meanwhile.
Pairs divided by those CPU seconds are pairs/s per core. The work the training step does on its
device (`compact.BatchExpander`: unpacking, upsampling, standardising; GPU work on a GPU node) is
not part of it and is timed separately here on the CPU (`expand_cpu_pairs_per_s_per_core`).
  pipeline_cpu_pairs_per_s_per_core  ray_jobs/_data.training_dataset -> compact_torch_batches (the
                                 training stream: shuffle buffer `data.shuffle_buffer` of --config,
                                 batch --batch, masks drawn) over the current (version-2) shards;
                                 and, labelled `path: host-decode, layout: v1`, today's earlier
                                 stream (decode, upsample and standardise in Ray Data, Ray's shuffle
                                 and collate) over the same pairs in the version-1 layout at the
                                 earlier default of 256 pairs per shard; and, labelled `v2-compare`,
                                 the training stream over the pairs converted at
                                 --compare-shard-size (`pipeline_shard_size_ratio`: the default
                                 size's rate over it). Processes run with the drivers' environment
                                 (`ray_jobs/runtime.py`: Arrow's allocator keeps freed pages)
  bare_read_pairs_per_s_per_core pyarrow.parquet.read_table of the stream's columns of the same
                                 files, one thread, process CPU time: the physical anchor
  pipeline_over_bare_read        the two above (goal >= 0.5); the sides run interleaved, --rounds
                                 times each, and each figure is the median of its rounds. An epoch
                                 is --cpu-stream-rows rows (the shards repeated; the earlier stream
                                 --v1-stream-rows), its per-epoch start-up included
  ray_read_floor_pairs_per_s_per_core   Ray Data's read of the same files handed over as blocks, nothing
  ray_read_floor_over_bare_read  done to them (no compact step, no batches): what Ray Data itself costs,
                                 the floor under any stream it carries
  inprocess_stream_pairs_per_s_per_core  the training stream's own work (read, compact step, shuffle
  inprocess_stream_over_bare_read  buffer, gather, masks) in this process without Ray
  convert_peak_rss_gb            (`--parts convert-memory`) peak resident memory of an in-process
                                 conversion at --compare-shard-size and at --shard-size, each in a
                                 fresh process
  allocator_pipeline_pairs_per_s_per_core  (`--parts allocator`) the training stream, one epoch per fresh
  allocator_keep_pages_over_default  process, with Arrow's allocator keeping freed pages
                                 (MIMALLOC_PURGE_DELAY=-1, the drivers' setting) and with mimalloc's
                                 default, alternated --rounds times
  pipeline_epoch_fixed_cpu_s     the CPU an epoch of the training stream costs whatever its length,
  pipeline_marginal_pairs_per_s_per_core  and the rate per pair beyond it: from the same stream over
                                 an epoch an eighth as long, run interleaved with the others
  layout_candidates              bytes per pair and bare read per core of the band encodings
                                 considered for the shards (byte planes or little-endian values x
                                 LZ4, zstd, none), written from the same rows

Older records:
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

# first: the environment Ray's and Arrow's processes read when they start (the drivers' own settings)
import ray_jobs.runtime  # noqa: F401

# isort: split
import numpy as np
import pyarrow.parquet as pq
import torch

from hqjepa.config import load_config
from hqjepa.data.collate import MaskCollator
from hqjepa.data.compact import BatchExpander
from hqjepa.data.convert import DEFAULT_SHARD_SIZE, convert_archive, convert_shard, finalise, plan_conversion
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

    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
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


# --- CPU cost of the input pipeline -----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu() -> dict[int, float]:
    """CPU seconds (utime + stime) of this process and every process descended from it."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    me = os.getpid()
    out, todo = {me: cpu.get(me, 0.0)}, [me]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = cpu[child]
            todo.append(child)
    return out


def _group(pid: int) -> str:
    """this process, a Ray worker, the raylet, the GCS or another helper (agents, log monitor)."""
    if pid == os.getpid():
        return "driver (this process: batches, masks, Ray's iterator)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "raylet/raylet" in cmd:
        return "raylet"
    if "gcs_server" in cmd:
        return "gcs"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray workers (read tasks)"
    return "other"


def tree_cpu_seconds(fn, by_group: bool = False):
    """(fn(), CPU seconds of this process tree while it ran, wall seconds[, seconds per process
    group]). A process that ended meanwhile is not counted (Ray keeps its workers)."""
    before = _proc_cpu()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    after = _proc_cpu()
    delta = {pid: t - before.get(pid, 0.0) for pid, t in after.items()}
    if not by_group:
        return result, sum(delta.values()), wall
    groups: dict[str, float] = {}
    for pid, sec in delta.items():
        groups[_group(pid)] = groups.get(_group(pid), 0.0) + sec
    return result, sum(delta.values()), wall, groups


def _repeat_files(shards: Path, stream_rows: int, tag: str) -> list[str]:
    """The shard files hard-linked under several names until they hold about `stream_rows` rows (Ray
    drops duplicate paths, hence links), so that an epoch is long enough to measure."""
    manifest = load_manifest(shards)
    files = shard_files(shards)
    repeats = max(1, -(-stream_rows // manifest["pairs"]))
    links = shards.parent / f"stream-{tag}"
    links.mkdir(exist_ok=True)
    linked = []
    for r in range(repeats):
        for f in files:
            dst = links / f"r{r:03d}-{Path(f).name}"
            if not dst.exists():
                os.link(f, dst)
            linked.append(str(dst))
    return linked


def _bare_read(files) -> int:
    """pyarrow.parquet.read_table of the stream's columns, one thread: the physical anchor. Rows read."""
    return sum(pq.read_table(f, columns=list(STREAM_COLUMNS), use_threads=False).num_rows for f in files)


def _training_epoch(ds, shard_dir: Path, cfg, batch: int) -> int:
    """One epoch of the training stream over `ds` (`training_pipeline(..., compact=True)`), as
    `ray_jobs/pretrain.py` runs it: shuffle buffer `data.shuffle_buffer`, masks drawn. Rows read."""
    from ray_jobs._data import compact_torch_batches

    batches = compact_torch_batches(
        ds.iterator(),
        batch,
        cfg.mask,
        cfg.model.grid,
        [0, 0, 0],
        shard_dir,
        shuffle_buffer=cfg.data.shuffle_buffer,
        shuffle_seed=0,
    )
    return sum(b["key"].shape[0] for b in batches)


def write_version1(shards: Path, out: Path) -> Path:
    """The same rows in the earlier layout (schema version 1), as earlier converters wrote them."""
    import pyarrow as pa

    from hqjepa.data.migrate import to_current
    from hqjepa.data.shards import MANIFEST, read_shard_meta, shard_tables, write_json_atomic, write_shard

    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((shards / MANIFEST).read_text())
    for entry in manifest["shards"]:
        path = shards / entry["file"]
        table = pa.concat_tables([to_current(t, 1) for t in shard_tables(path)])
        entry["bytes"] = write_shard(out / entry["file"], table, {**read_shard_meta(path), "schema_version": 1})
    write_json_atomic(
        out / MANIFEST, {**manifest, "schema_version": 1, "bytes": sum(e["bytes"] for e in manifest["shards"])}
    )
    return out


def bench_layouts(shards: Path) -> None:
    """Bytes per pair and bare-read pairs/s per core of candidate band encodings, from the same rows."""
    import pyarrow as pa

    from hqjepa.data.shards import BANDS, band_array, band_dtype, shard_tables

    tables = [pa.concat_tables(list(shard_tables(f))) for f in shard_files(shards)]
    rows = sum(t.num_rows for t in tables)
    out = shards.parent / "layouts"
    out.mkdir(exist_ok=True)
    for planes in (True, False):
        encoded = []
        for t in tables:
            cols = {}
            for b in BANDS:
                values = band_array(t, b).reshape(t.num_rows, -1).astype(band_dtype(b))
                raw = (
                    np.ascontiguousarray(
                        values.view(np.uint8).reshape(t.num_rows, -1, values.itemsize).transpose(0, 2, 1)
                    )
                    if planes
                    else values.view(np.uint8)
                ).reshape(t.num_rows, -1)
                cols[b] = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(raw.shape[1]), t.num_rows, [None, pa.py_buffer(raw)]
                )
            encoded.append(pa.table(cols))
        for codec in ("lz4", "zstd", "none"):
            files = []
            for i, t in enumerate(encoded):
                f = out / f"{'planes' if planes else 'le'}-{codec}-{i}.parquet"
                pq.write_table(
                    t, f, compression=codec, use_dictionary=False, row_group_size=64, write_page_checksum=True
                )
                files.append(f)
            size = sum(f.stat().st_size for f in files) / rows
            rates = []
            for _ in range(3):
                c0, n = time.process_time(), 0
                for _ in range(3):
                    for f in files:
                        n += pq.read_table(f, use_threads=False).num_rows
                rates.append(n / (time.process_time() - c0))
            emit(
                "layout_candidates",
                size / 1000,
                "KB per pair (bands only)",
                encoding=f"fixed_size_binary, {'byte planes' if planes else 'little-endian values'}, {codec}",
                bare_read_pairs_per_s_per_core=round(float(np.median(rates)), 1),
                goal="<= 250 KB per pair",
            )


def bench_cpu(
    shards: Path,
    cfg,
    batch: int,
    stream_rows: int,
    rounds: int,
    v1_rows: int = 4096,
    compare: Path | None = None,
) -> None:
    """The training stream's CPU cost per pair against the bare read of the same files (module
    docstring). compare: the same pairs converted at another shard size, streamed interleaved."""
    import pyarrow as pa
    import ray

    from hqjepa.data.stream import training_pipeline
    from ray_jobs._data import MaskCollateFn, read_shards, torch_batches

    # the earlier stream as it was: version-1 shards at the earlier default size
    old = write_version1(compare or shards, shards.parent / "shards-v1")
    current_files = _repeat_files(shards, stream_rows, "v2")
    other_files = _repeat_files(compare, stream_rows, "v2-compare") if compare else None
    # an epoch an eighth as long (a prefix of the same links): the CPU an epoch costs whatever its
    # length (Ray Data's executor, the first reads) and the cost per pair beyond it
    short_files = current_files[: max(1, len(current_files) // 8)]
    earlier_files = _repeat_files(old, v1_rows, "v1")
    manifest = load_manifest(shards)
    grid, shuffle = cfg.model.grid, cfg.data.shuffle_buffer
    ds_new = training_pipeline(read_shards(current_files), manifest, split=None, compact=True)
    ds_short = training_pipeline(read_shards(short_files), manifest, split=None, compact=True)
    ds_other = training_pipeline(read_shards(other_files), manifest, split=None, compact=True) if other_files else None
    ds_floor = read_shards(current_files)  # Ray Data's read alone: no compact step, no batches
    # the earlier stream as it was: Ray's block split (no fusion), host decode, Ray's shuffle and collate
    ds_old = training_pipeline(read_shards(earlier_files, block_per_file=False), manifest, split=None)

    def pipeline_old() -> int:
        rows = 0
        for b in torch_batches(
            ds_old.iterator(),
            batch,
            MaskCollateFn(cfg.mask, grid, [0, 0, 0]),
            old,
            drop_last=True,
            local_shuffle_buffer_size=shuffle or None,
            local_shuffle_seed=0,
        ):
            rows += b["s2"].shape[0]
        return rows

    def ray_floor() -> int:  # the blocks handed over, untouched: what Ray Data costs before any work of ours
        it = ds_floor.iterator().iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)
        return sum(block.num_rows for block in it)

    def in_process() -> int:  # the same work as the training stream in one process, no Ray
        from hqjepa.data.compact import compact_batches
        from hqjepa.data.stream import compact_block

        blocks = (
            compact_block(pq.read_table(f, columns=list(STREAM_COLUMNS), use_threads=False)) for f in current_files
        )
        batches = compact_batches(blocks, batch, cfg.mask, grid, [0, 0, 0], shuffle_buffer=shuffle, shuffle_seed=0)
        return sum(b["key"].shape[0] for b in batches)

    def expand_cost() -> tuple[float, int]:  # the step's input decode, timed on this CPU (1 thread)
        from hqjepa.data.compact import compact_batches
        from hqjepa.data.stream import compact_block

        blocks = [compact_block(pq.read_table(f, columns=list(STREAM_COLUMNS))) for f in current_files[:2]]
        batches = list(compact_batches(blocks, batch, cfg.mask, grid, 0))
        expand = BatchExpander.from_manifest(manifest)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        c0 = time.process_time()
        for b in batches:
            expand(b)
        dt = time.process_time() - c0
        torch.set_num_threads(threads)
        return dt, sum(b["key"].shape[0] for b in batches)

    # each layout's pipeline interleaved with its own bare read; the current layout first, alone (the
    # earlier stream's 0.8 MB float32 blocks fill and spill Ray's object store, which would charge
    # the next epochs for it)
    first = {
        "pipeline_v2": lambda: _training_epoch(ds_new, shards, cfg, batch),
        "pipeline_v2_short": lambda: _training_epoch(ds_short, shards, cfg, batch),
        "bare_v2": lambda: _bare_read(current_files),
        "pipeline_ray_read_floor": ray_floor,
        "inprocess_v2": in_process,
    }
    if other_files:
        first["pipeline_v2_compare"] = lambda: _training_epoch(ds_other, compare, cfg, batch)
        first["bare_v2_compare"] = lambda: _bare_read(other_files)
    pairs = (
        first,
        {"pipeline_v1_host_decode": pipeline_old, "bare_v1": lambda: _bare_read(earlier_files)},
    )
    results: dict[str, list[tuple[float, float, int, float]]] = {k: [] for side in pairs for k in side}
    groups: dict[str, dict[str, float]] = {}
    for sides in pairs:
        for name, fn in sides.items():
            if name.startswith("pipeline"):
                fn()  # cold: worker start-up, imports
        for _ in range(rounds):  # interleaved
            for name, fn in sides.items():
                if name.startswith(("bare", "inprocess")):
                    c0, w0 = time.process_time(), time.perf_counter()
                    rows = fn()
                    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                else:
                    rows, cpu, wall, by = tree_cpu_seconds(fn, by_group=True)
                    for g, sec in by.items():
                        groups.setdefault(name, {}).setdefault(g, 0.0)
                        groups[name][g] += sec / rows / rounds * 1e3
                results[name].append((rows / cpu, wall, rows, cpu))
    load = os.getloadavg()[0]
    med = {k: float(np.median([r[0] for r in v])) for k, v in results.items()}
    common = {
        "batch": batch,
        "shuffle_buffer": shuffle,
        "rounds": rounds,
        "load_1min_at_end": round(load, 2),
        "ray_cpus": int(ray.cluster_resources().get("CPU", 0)),
        "mimalloc_purge_delay": os.environ.get("MIMALLOC_PURGE_DELAY"),
        "arrow_memory_pool": pa.default_memory_pool().backend_name,
        "cpu_count": os.cpu_count(),
    }
    sizes = {"v2": load_manifest(shards)["shard_size"], "v1": load_manifest(old)["shard_size"]}
    streams = [("pipeline_v2", "v2", "compact (the training stream)", "bare_v2")]
    if other_files:
        sizes["v2-compare"] = load_manifest(compare)["shard_size"]
        streams.append(("pipeline_v2_compare", "v2-compare", "compact (the training stream)", "bare_v2_compare"))
    streams.append(("pipeline_v1_host_decode", "v1", "host-decode (the earlier stream)", "bare_v1"))
    for name, layout, path, bare_key in streams:
        main = layout == "v2"
        emit(
            "pipeline_cpu_pairs_per_s_per_core",
            med[name],
            "pairs/s per core",
            layout=layout,
            shard_size=sizes[layout],
            path=path,
            goal=">= 1500" if main else "",
            ok=med[name] >= 1500 if main else None,
            rounds_values=[round(r[0], 1) for r in results[name]],
            wall_s=[round(r[1], 2) for r in results[name]],
            rows=results[name][0][2],
            cpu_ms_per_pair_by_process={g: round(v, 4) for g, v in groups.get(name, {}).items()},
            **common,
        )
        emit(
            "bare_read_pairs_per_s_per_core",
            med[bare_key],
            "pairs/s per core",
            layout=layout,
            shard_size=sizes[layout],
            rounds_values=[round(r[0], 1) for r in results[bare_key]],
            **common,
        )
        emit(
            "pipeline_over_bare_read",
            med[name] / med[bare_key],
            "ratio",
            layout=layout,
            shard_size=sizes[layout],
            path=path,
            goal=">= 0.5" if main else "",
            ok=med[name] / med[bare_key] >= 0.5 if main else None,
            **common,
        )
    # CPU(rows) = fixed + rows / marginal, from the long and the short epoch's medians
    (long_rows, long_cpu), (short_rows, short_cpu) = (
        (results[k][0][2], float(np.median([r[3] for r in results[k]]))) for k in ("pipeline_v2", "pipeline_v2_short")
    )
    per_pair = (long_cpu - short_cpu) / (long_rows - short_rows)
    emit(
        "pipeline_epoch_fixed_cpu_s",
        short_cpu - per_pair * short_rows,
        "CPU s per epoch",
        layout="v2",
        note="the training stream's CPU per epoch whatever its length (executor start, first reads)",
        epochs_rows=[short_rows, long_rows],
        **common,
    )
    emit(
        "pipeline_marginal_pairs_per_s_per_core",
        1.0 / per_pair,
        "pairs/s per core",
        layout="v2",
        note="CPU per pair beyond the per-epoch cost: the rate of an epoch of the whole archive",
        **common,
    )
    for name, metric, note in (
        (
            "pipeline_ray_read_floor",
            "ray_read_floor",
            "read_shards -> iter_batches(batch_size=None), blocks untouched: Ray Data's own cost, no work of ours",
        ),
        (
            "inprocess_v2",
            "inprocess_stream",
            "read_table + compact_block + compact_batches (shuffle, gather, masks) in this process, no Ray",
        ),
    ):
        emit(f"{metric}_pairs_per_s_per_core", med[name], "pairs/s per core", layout="v2", note=note, **common)
        emit(f"{metric}_over_bare_read", med[name] / med["bare_v2"], "ratio", layout="v2", **common)
    if other_files:
        emit(
            "pipeline_shard_size_ratio",
            med["pipeline_v2"] / med["pipeline_v2_compare"],
            "ratio",
            note="pairs/s per core of the training stream at the default shard size over the compared size",
            shard_sizes=[sizes["v2"], sizes["v2-compare"]],
            **common,
        )
    emit(
        "pipeline_v2_over_v1_host_decode",
        med["pipeline_v2"] / med["pipeline_v1_host_decode"],
        "ratio",
        **common,
    )
    dt, rows = expand_cost()
    emit(
        "expand_cpu_pairs_per_s_per_core",
        rows / dt,
        "pairs/s per core",
        note="BatchExpander (unpack, upsample, standardise) run on this CPU, 1 thread: step work, on the device",
        batch=batch,
    )
    pa.default_memory_pool().release_unused()


def bench_convert_memory(archive: Path, work: Path, sizes: tuple[int, ...]) -> None:
    """Peak resident memory of one in-process conversion per shard size, each in a fresh process
    (a conversion task holds its group of pairs in memory until the shard is written)."""
    import subprocess
    import sys

    # VmHWM, the high-water mark of this process image: getrusage's ru_maxrss would also count the
    # parent's resident memory at the fork (Linux keeps it across exec)
    code = (
        "import json, re, sys\n"
        "from hqjepa.data.convert import convert_archive\n"
        "convert_archive(sys.argv[1], sys.argv[2], shard_size=int(sys.argv[3]), progress=False)\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print(json.dumps({'maxrss_kb': int(hwm)}))\n"
    )
    for size in sizes:
        out = work / f"shards-memory-{size}"
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run(
            [sys.executable, "-c", code, str(archive), str(out), str(size)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        peak = json.loads(run.stdout.strip().splitlines()[-1])["maxrss_kb"]
        emit("convert_peak_rss_gb", peak / 1e6, "GB", shard_size=size, pairs=load_manifest(out)["pairs"])
        shutil.rmtree(out, ignore_errors=True)


def stream_epoch(shards: Path, cfg, batch: int, stream_rows: int) -> None:
    """One warm epoch of the training stream and one bare read of its files, timed as `bench_cpu`
    times them; prints one `stream_epoch` line (run by `bench_allocator` in a child process)."""
    from hqjepa.data.stream import training_pipeline
    from ray_jobs._data import read_shards

    files = _repeat_files(shards, stream_rows, "v2")
    ds = training_pipeline(read_shards(files), load_manifest(shards), split=None, compact=True)
    _training_epoch(ds, shards, cfg, batch)  # cold: worker start-up, imports
    rows, cpu, _ = tree_cpu_seconds(lambda: _training_epoch(ds, shards, cfg, batch))
    c0 = time.process_time()
    bare_rows = _bare_read(files)
    emit("stream_epoch", rows / cpu, "pairs/s per core", bare_read=bare_rows / (time.process_time() - c0))


def bench_allocator(work: Path, args) -> None:
    """The training stream with Arrow's allocator keeping freed pages (MIMALLOC_PURGE_DELAY=-1, what
    the drivers set) against mimalloc's default (10 ms), each epoch in a fresh process and Ray
    session, the two alternated --rounds times."""
    import subprocess
    import sys

    rates: dict[str, list[float]] = {"-1": [], "10": []}
    bare: dict[str, list[float]] = {"-1": [], "10": []}
    for _ in range(args.rounds):
        for delay in rates:
            cmd = [sys.executable, "-m", "bench.data", "--parts", "stream-epoch", "--workdir", str(work)]
            cmd += ["--config", args.config, "--batch", str(args.batch), "--cpu-stream-rows", str(args.cpu_stream_rows)]
            env = {**os.environ, "MIMALLOC_PURGE_DELAY": delay}
            out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            line = next(json.loads(x) for x in out.splitlines() if '"stream_epoch"' in x)
            rates[delay].append(line["value"])
            bare[delay].append(line["bare_read"])
    med = {k: float(np.median(v)) for k, v in rates.items()}
    for delay, label in (("-1", "kept (the drivers' setting)"), ("10", "mimalloc's default")):
        emit(
            "allocator_pipeline_pairs_per_s_per_core",
            med[delay],
            "pairs/s per core",
            mimalloc_purge_delay=delay,
            freed_pages=label,
            rounds_values=[round(v, 1) for v in rates[delay]],
            bare_read_rounds_values=[round(v, 1) for v in bare[delay]],
            bare_read_median=round(float(np.median(bare[delay])), 1),
        )
    emit("allocator_keep_pages_over_default", med["-1"] / med["10"], "ratio", rounds=args.rounds)


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="pairs per shard (ray_jobs/convert.py's default)"
    )
    p.add_argument(
        "--compare-shard-size",
        type=int,
        default=256,
        help="the CPU measurement also streams the pairs converted at this size (0: not)",
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--steps", type=int, default=3, help="timed training steps (median)")
    p.add_argument("--stream-rows", type=int, default=2048, help="rows per read epoch (shards repeated)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--parts", default="convert,layouts,cpu,read,consumer", help="which measurements, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the CPU measurement")
    p.add_argument("--cpu-stream-rows", type=int, default=32768, help="rows per epoch of the CPU measurement")
    p.add_argument(
        "--v1-stream-rows", type=int, default=4096, help="rows per epoch of the earlier (version-1) stream (slow)"
    )
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hqjepa-bench-data-"))
    try:
        archive = work / "archive"
        if not archive.exists():  # a --workdir of an earlier run keeps its archive
            t0 = time.perf_counter()
            write_archive(archive, args.pairs, "v1", seed=0)
            emit("synth_archive_pairs_per_s", args.pairs / (time.perf_counter() - t0), "pairs/s", pairs=args.pairs)
        if "convert" in parts:
            shards = bench_convert(archive, work, args.shard_size)
        else:
            import ray

            shards = work / "shards"
            if not (shards / "_manifest.json").exists():
                convert_archive(archive, shards, shard_size=args.shard_size, progress=False)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        cfg = load_config(args.config)
        if "stream-epoch" in parts:  # one child of bench_allocator
            stream_epoch(shards, cfg, args.batch, args.cpu_stream_rows)
            return 0
        if "convert-memory" in parts:
            bench_convert_memory(archive, work, (args.compare_shard_size or 256, args.shard_size))
        if "layouts" in parts:
            bench_layouts(shards)
        if "cpu" in parts:
            compare = None
            if args.compare_shard_size and args.compare_shard_size != args.shard_size:
                compare = work / f"shards-{args.compare_shard_size}"
                if not (compare / "_manifest.json").exists():
                    convert_archive(archive, compare, shard_size=args.compare_shard_size, progress=False)
            bench_cpu(shards, cfg, args.batch, args.cpu_stream_rows, args.rounds, args.v1_stream_rows, compare)
        if "allocator" in parts:
            bench_allocator(work, args)
        pipeline = consumer = None
        if "read" in parts:
            pipeline = bench_read(shards, args.batch, cfg.mask, cfg.model.grid, args.stream_rows)
        if "consumer" in parts:
            consumer = bench_consumer(args.config, args.batch, args.steps)
        if pipeline is None or "consumer" not in parts:
            pass
        elif consumer is not None:
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
