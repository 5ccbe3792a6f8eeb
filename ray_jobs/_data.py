"""Driver-side helper: the Ray Dataset of training pairs from a directory of converted shards.

    ds = training_dataset("/data/ben-shards")                 # lazy; nothing is read yet
    TorchTrainer(loop, datasets={"train": ds}, ...)
    # in the loop, per worker and epoch:
    shard = ray.train.get_dataset_shard("train")
    for batch in compact_torch_batches(shard, cfg.optim.batch_size, cfg.mask, cfg.model.grid,
                                       seed=[seed, rank, epoch], shard_dir=shard_dir, ...):
        trainer.train_step([batch])    # Trainer(input_transform=BatchExpander...) decodes on its device

The Dataset carries compact rows (`hqjepa.data.stream.compact_block`: the stored band bytes);
`compact_torch_batches` forms the batches from whole blocks with the library's shuffle buffer and
gather (`hqjepa.data.compact.compact_batches`, in a background thread) instead of Ray's batcher,
which copied each row three times. `training_dataset(..., compact=False)` with `torch_batches` and
`MaskCollateFn` is the earlier host-decode stream (decoded float32 blocks).

Each shard file is one read task and one block (`override_num_blocks` = the file count): Ray Data
otherwise splits the read of a few large files into more blocks than files, which keeps the read
and the compact step from fusing into one task (an extra object-store round trip per row;
measured: 3x the pipeline's CPU per pair).

Every shard's footer is checked against the manifest before Ray reads anything, so a truncated or
foreign shard fails at once with its path (hqjepa.data.shards.ShardError). A shard whose footer is
intact but whose data pages are damaged fails inside a Ray read task, whose error does not name the
file; `torch_batches` then checks every shard's page checksums and raises ShardError naming the
damaged ones (a full read, paid only after a failure).

Ray 2.60 routes `read_parquet` through its datasource V2 by default, whose ListFiles step indexes
every footer in a single task at the start of every epoch: measured here on 32 shards, 4-7 s before
the first batch of each epoch, against under 1 s with the V1 datasource, which fetches footers once
when the Dataset is created and reads one task per file. So shards are read with V1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import ray
from ray.data.collate_fn import NumpyBatchCollateFn

from hqjepa.config import MaskConfig
from hqjepa.data.collate import MaskCollator
from hqjepa.data.compact import compact_batches, prefetched
from hqjepa.data.shards import ShardError, find_corrupt_shards, is_uri, load_manifest, resolve, shard_files
from hqjepa.data.stream import PATH_COLUMN, STREAM_COLUMNS, training_pipeline


def training_dataset(
    shard_dir: str | Path,
    split: str | None = "train",
    stats_split: str | None = "train",
    block_rows: int = 64,
    shuffle_files: bool = True,
    compact: bool = True,
) -> ray.data.Dataset:
    """Validated shards -> read_parquet (only the columns training needs) -> compact rows (default;
    the step decodes them) or, with compact=False, decode/resample/normalise here."""
    manifest = load_manifest(shard_dir)
    files = shard_files(shard_dir)  # footer validation: ShardError names the bad shard
    if not files:
        raise ValueError(f"{shard_dir}: the manifest lists no shard with rows")
    ds = read_shards(files, shuffle_files)
    return training_pipeline(ds, manifest, split=split, stats_split=stats_split, block_rows=block_rows, compact=compact)


@contextlib.contextmanager
def _parquet_datasource_v1():
    ctx = ray.data.DataContext.get_current()
    previous = ctx.use_datasource_v2
    ctx.use_datasource_v2 = False  # read_parquet picks the datasource when it is called
    try:
        yield
    finally:
        ctx.use_datasource_v2 = previous


def read_shards(files: Sequence[str], shuffle_files: bool = True, block_per_file: bool = True) -> ray.data.Dataset:
    """The stream's columns (plus the shard path) of these shard files, one read task per file.
    Files may be URIs (s3://...): the filesystem is resolved once by pyarrow, with any options the
    URI carries (endpoint_override, region, ...), and handed to Ray."""
    kwargs = {}
    if files and is_uri(files[0]):
        fs, _ = resolve(files[0])
        files, kwargs = [resolve(f)[1] for f in files], {"filesystem": fs}
    with _parquet_datasource_v1():
        ds = ray.data.read_parquet(
            list(files),
            include_paths=True,
            shuffle="files" if shuffle_files else None,
            # one block per file: read and decode fuse (module docstring); False: Ray's own split
            override_num_blocks=len(files) if block_per_file else None,
            **kwargs,
        )
    return ds.select_columns([PATH_COLUMN, *STREAM_COLUMNS])  # pushed down into the Parquet read


class MaskCollateFn(NumpyBatchCollateFn):
    """`hqjepa.data.collate.MaskCollator` as the collate class `iter_torch_batches` expects:
    stacks the decoded numpy batch into tensors and draws the batch's multiblock masks."""

    def __init__(self, mask_cfg: MaskConfig, grid: int, seed: int | Sequence[int] = 0):
        self._collate = MaskCollator(mask_cfg, grid, seed)

    def __call__(self, batch: dict) -> dict:
        return self._collate(batch)


def compact_torch_batches(
    iterator,
    batch_size: int,
    mask_cfg: MaskConfig,
    grid: int,
    seed: int | Sequence[int],
    shard_dir: str | Path,
    shuffle_buffer: int = 0,
    shuffle_seed: int | None = None,
    prefetch_batches: int = 2,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """Compact training batches (`hqjepa.data.compact`) from a DataIterator over `training_dataset`
    (`get_dataset_shard("train")` or `ds.iterator()`): whole blocks from Ray Data (which prefetches
    `prefetch_batches` of them), the library's shuffle buffer and gather and masks in a background
    thread `prefetch_batches` batches ahead. A failed read becomes a ShardError naming the damaged
    shard(s), as in `torch_batches`. pin_memory: gather into pinned memory (CUDA), so the
    host-to-device copy is a DMA and needs no staging copy."""
    blocks = iterator.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=max(prefetch_batches, 1))
    batches = compact_batches(
        blocks,
        batch_size,
        mask_cfg,
        grid,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        shuffle_seed=shuffle_seed,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
    try:
        yield from prefetched(batches, prefetch_batches)
    except ShardError:
        raise
    except Exception as e:
        damaged = find_corrupt_shards(shard_files(shard_dir, validate=False))
        if damaged:
            raise ShardError("; ".join(str(d) for d in damaged)) from e
        raise


def torch_batches(
    iterator, batch_size: int, collate_fn: NumpyBatchCollateFn, shard_dir: str | Path, **kwargs
) -> Iterator[dict]:
    """`iterator.iter_torch_batches(...)` (a DataIterator: `get_dataset_shard("train")` or
    `ds.iterator()`) that turns a failed read into a ShardError naming the damaged shard(s)."""
    try:
        yield from iterator.iter_torch_batches(batch_size=batch_size, collate_fn=collate_fn, **kwargs)
    except ShardError:
        raise
    except Exception as e:
        damaged = find_corrupt_shards(shard_files(shard_dir, validate=False))
        if damaged:
            raise ShardError("; ".join(str(d) for d in damaged)) from e
        raise
