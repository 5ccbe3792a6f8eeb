"""Ray Data stream from Parquet shards to training batches, as pure per-block transforms.

This module never imports Ray: the driver creates the Dataset (`ray.data.read_parquet(files,
columns=STREAM_COLUMNS, include_paths=True)`, see `ray_jobs/_data.py`) and hands it to
`training_pipeline`, which only calls the Dataset's own methods. The pipeline:

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
from hqjepa.data.shards import BANDS, ShardError, band_stats
from hqjepa.data.transforms import resample_array

STREAM_COLUMNS: tuple[str, ...] = ("patch_id", "split") + BANDS + ("labels19",)
PATH_COLUMN = "path"  # added by read_parquet(include_paths=True)


def _band_block(table, band: str) -> np.ndarray:
    """A fixed_size_list band column -> [rows, h, w] (zero-copy for a single chunk)."""
    n = native_size_px(band)
    col = table.column(band)
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, n, n)


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
):
    """Apply the decode step to a Ray Dataset read from the shards; returns the new Dataset.

    dataset: `ray.data.read_parquet(files, columns=list(STREAM_COLUMNS), include_paths=True)`.
    split: rows to keep (None: every row); stats_split: whose statistics normalise (falls back to all).
    block_rows: rows per decode call (bounds the float32 working set: ~0.7 MB per row).
    """
    return dataset.map_batches(
        block_decoder(manifest, split, stats_split, size_px),
        batch_format="pyarrow",
        batch_size=block_rows,
        zero_copy_batch=True,
    )
