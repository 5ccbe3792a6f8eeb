"""Ray Data stream from Parquet shards to training batches, as pure per-block transforms.

This module never imports Ray: the driver creates the Dataset (`ray.data.read_parquet(files,
columns=STREAM_COLUMNS, include_paths=True)`, see `ray_jobs/_data.py`) and hands it to
`training_pipeline`, which only calls the Dataset's own methods.

Two decode placements. The default, `compact=True` (`compact_block`), decodes nothing on the CPU:

    read_parquet -> map_batches(compact_block, batch_format="pyarrow")
           keep the requested split; add `key`; keep the band columns' bytes as stored (a
           version-1 block is re-encoded to the version-2 byte planes here)
      -> iter_torch_batches(collate_fn=compact.CompactCollator(...))   # uint8 band groups + masks
      -> the training step: compact.BatchExpander on its device (unpack, upsample, standardise)

so Ray's object store and the host-to-device copy carry ~276 KB per pair, not 806 KB of float32,
and the CPU does the Parquet read and little else. `compact=False` is the host decode below, whose
blocks are the model inputs themselves (the reference the compact path is tested against):

    read_parquet (streaming, one shard = one or more blocks)
      -> map_batches(decode_block, batch_format="pyarrow")   # once per block, no per-row Python
           keep the requested split; fixed_size_list columns -> [B, h, w] arrays;
           20 m / 60 m bands upsampled to 120 px (bilinear, transforms.resample_array);
           (x - mean_b) / std_b with the manifest's statistics
      -> iter_torch_batches(batch_size, collate_fn=MaskCollator(mask_cfg, grid, seed + rank))
           per Ray Train worker: ray.train.get_dataset_shard("train").iter_torch_batches(...)

Blocks leave `decode_block` as {"s2": float32 [B,12,120,120], "s1": float32 [B,2,120,120],
"labels19": float32 [B,19], "key": int64 [B]}; `key` is a stable hash (CRC-32) of each row's
patch id, from which the collate seeds the batch's masks, so masks do not depend on which
collate thread ran first; the collate adds the masks (`collate.py` documents the batch dict).
A block that does not match the shard schema raises ShardError naming its shard.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from hqjepa.bands import REFERENCE_SIZE_PX, S1_BANDS, S2_BANDS, native_size_px
from hqjepa.data.labels import LABELS19
from hqjepa.data.shards import BANDS, ShardError, band_array, band_column, band_stats, shard_version
from hqjepa.data.transforms import resample_array

STREAM_COLUMNS: tuple[str, ...] = ("patch_id", "split") + BANDS + ("labels19",)
PATH_COLUMN = "path"  # added by read_parquet(include_paths=True)


def _band_block(table, band: str) -> np.ndarray:
    """A band column of either shard layout -> [rows, h, w] as stored (zero-copy for a version-1
    single chunk)."""
    return band_array(table, band)


def _shard_of(table) -> str:
    if PATH_COLUMN in table.column_names and table.num_rows:
        return str(table.column(PATH_COLUMN)[0].as_py())
    return "<unknown shard: read with include_paths=True>"


def decode_block(
    table, *, mean: np.ndarray, std: np.ndarray, split: str | None = None, size_px: int = REFERENCE_SIZE_PX
) -> dict[str, np.ndarray]:
    """One pyarrow block of shard rows -> normalised model arrays (module docstring).

    mean, std: float32 [14] in BANDS order (S2_BANDS then S1_BANDS).
    split: keep only rows of this split (None keeps all).
    """
    import pyarrow.compute as pc

    try:
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split))
        b = table.num_rows
        s2 = torch.empty((b, len(S2_BANDS), size_px, size_px), dtype=torch.float32)
        by_size: dict[int, list[int]] = {}
        for i, band in enumerate(S2_BANDS):
            by_size.setdefault(native_size_px(band), []).append(i)
        for idx in by_size.values():  # one interpolate call per native grid (10 / 20 / 60 m)
            block = np.stack([_band_block(table, S2_BANDS[i]) for i in idx], axis=1)
            s2[:, idx] = resample_array(block, size_px)
        s1 = torch.from_numpy(np.stack([_band_block(table, band) for band in S1_BANDS], axis=1).astype(np.float32))
        if s1.shape[-1] != size_px:
            s1 = resample_array(s1, size_px)
        m = torch.tensor(np.asarray(mean), dtype=torch.float32)[:, None, None]
        sd = torch.tensor(np.asarray(std), dtype=torch.float32)[:, None, None]
        s2.sub_(m[: len(S2_BANDS)]).div_(sd[: len(S2_BANDS)])
        s1 = (s1 - m[len(S2_BANDS) :]) / sd[len(S2_BANDS) :]
        labels = table.column("labels19").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        labels = labels.reshape(b, len(LABELS19)).astype(np.float32)
        keys = np.fromiter(
            (zlib.crc32(p.encode()) for p in table.column("patch_id").to_pylist()), dtype=np.int64, count=b
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ShardError(f"{_shard_of(table)}: block does not decode as an hqjepa shard ({e})") from e
    return {"s2": s2.numpy(), "s1": s1.numpy(), "labels19": labels, "key": keys}


def compact_block(table, *, split: str | None = None):
    """One pyarrow block of shard rows (either schema version) -> the compact rows Ray Data carries:
    `key` (int64 CRC-32 of the patch id), `labels19` and the 14 band columns in the version-2 byte
    planes, no values decoded (module docstring). split: keep only rows of this split (None: all)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split))
        keys = np.fromiter(
            (zlib.crc32(p.encode()) for p in table.column("patch_id").to_pylist()), dtype=np.int64, count=table.num_rows
        )
        cols = {"key": pa.array(keys), "labels19": table.column("labels19")}
        v1 = shard_version(table.schema) == 1
        for band in BANDS:
            if v1:
                cols[band] = band_column(band_array(table, band).reshape(table.num_rows, -1))
            else:
                cols[band] = table.column(band)
        return pa.table(cols)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as e:
        raise ShardError(f"{_shard_of(table)}: block does not decode as an hqjepa shard ({e})") from e


def block_decoder(
    manifest: Mapping[str, Any],
    split: str | None = "train",
    stats_split: str | None = "train",
    size_px: int = REFERENCE_SIZE_PX,
):
    """`decode_block` bound to the manifest's normalisation statistics (a picklable partial)."""
    mean, std = band_stats(manifest, stats_split).vectors(BANDS)
    return partial(decode_block, mean=mean, std=std, split=split, size_px=size_px)


def training_pipeline(
    dataset,
    manifest: Mapping[str, Any],
    split: str | None = "train",
    stats_split: str | None = "train",
    size_px: int = REFERENCE_SIZE_PX,
    block_rows: int = 64,
    compact: bool = False,
):
    """Apply the decode step to a Ray Dataset read from the shards; returns the new Dataset.

    dataset: `ray.data.read_parquet(files, columns=list(STREAM_COLUMNS), include_paths=True)`.
    split: rows to keep (None: every row); stats_split: whose statistics normalise (falls back to all).
    block_rows: rows per decode call (bounds the float32 working set: ~0.7 MB per row).
    compact: carry the stored bytes (`compact_block`; the step expands them with
    `compact.BatchExpander.from_manifest(manifest, stats_split, size_px)`); block_rows is then
    ignored and a whole read block is one call, nothing being decoded.
    """
    if compact:
        return dataset.map_batches(
            partial(compact_block, split=split), batch_format="pyarrow", batch_size=None, zero_copy_batch=True
        )
    return dataset.map_batches(
        block_decoder(manifest, split, stats_split, size_px),
        batch_format="pyarrow",
        batch_size=block_rows,
        zero_copy_batch=True,
    )
