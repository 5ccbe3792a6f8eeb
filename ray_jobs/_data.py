"""Driver-side helper: the Ray Dataset of training pairs from a directory of converted shards.

    ds = training_dataset("/data/ben-shards")                 # lazy; nothing is read yet
    TorchTrainer(loop, datasets={"train": ds}, ...)
    # in the loop, per worker and epoch:
    shard = ray.train.get_dataset_shard("train")
    collate = MaskCollateFn(cfg.mask, cfg.model.grid, seed=cfg.optim.seed + ray.train.get_context().get_world_rank())
    for batch in shard.iter_torch_batches(batch_size=cfg.optim.batch_size, collate_fn=collate): ...

Every shard's footer is checked against the manifest before Ray reads anything, so a truncated or
foreign shard fails at once with its path (hqjepa.data.shards.ShardError).
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.data.collate_fn import NumpyBatchCollateFn

from hqjepa.config import MaskConfig
from hqjepa.data.collate import MaskCollator
from hqjepa.data.shards import load_manifest, shard_files
from hqjepa.data.stream import PATH_COLUMN, STREAM_COLUMNS, training_pipeline


def training_dataset(shard_dir: str | Path, split: str | None = "train", stats_split: str | None = "train",
                     block_rows: int = 64, shuffle_files: bool = True) -> ray.data.Dataset:
    """Validated shards -> read_parquet (only the columns training needs) -> decode/resample/normalise."""
    manifest = load_manifest(shard_dir)
    files = shard_files(shard_dir)           # footer validation: ShardError names the bad shard
    if not files:
        raise ValueError(f"{shard_dir}: the manifest lists no shard with rows")
    ds = ray.data.read_parquet(files, include_paths=True, shuffle="files" if shuffle_files else None)
    ds = ds.select_columns([PATH_COLUMN, *STREAM_COLUMNS])   # pushed down into the Parquet read
    return training_pipeline(ds, manifest, split=split, stats_split=stats_split, block_rows=block_rows)


class MaskCollateFn(NumpyBatchCollateFn):
    """`hqjepa.data.collate.MaskCollator` as the collate class `iter_torch_batches` expects:
    stacks the decoded numpy batch into tensors and draws the batch's multiblock masks."""

    def __init__(self, mask_cfg: MaskConfig, grid: int, seed: int = 0):
        self._collate = MaskCollator(mask_cfg, grid, seed)

    def __call__(self, batch: dict) -> dict:
        return self._collate(batch)
