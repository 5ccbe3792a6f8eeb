"""Training batches: stacked, normalised S2/S1 tensors plus per-batch multiblock masks.

The engine consumes exactly this dict (B = batch size, Nc context slots, K targets, T slots each):

    s2         float32 [B, 12, 120, 120]   normalised S2 (S2_BANDS order, 10 m grid)
    s1         float32 [B, 2, 120, 120]    normalised S1 (VV, VH)
    ctx_idx    int64   [B, Nc]             context patch indices (raster order, padded)
    ctx_valid  bool    [B, Nc]
    tgt_idx    int64   [B, K, T]           target patch indices per block (padded)
    tgt_valid  bool    [B, K, T]
    labels19   float32 [B, 19]             multi-hot, when the examples carry labels

One `collate` serves the one-process DataLoader (a list of examples, or the dict that
`SyntheticPairs.__getitems__` returns) and Ray Data (`iter_torch_batches(collate_fn=...)` hands it a
dict of numpy arrays that `stream.decode_block` already resampled and normalised). The masks come
from `hqjepa.masks.multiblock.sample_masks`, drawn once per batch and shared by S2 and S1.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hqjepa.config import MaskConfig

BATCH_KEYS = ("s2", "s1", "labels19", "key")


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # Ray hands out read-only views of its object store; the step may write
        x = x.copy()
    return torch.from_numpy(x)


def _stack(examples: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A list of per-example dicts or one dict of batched arrays -> dict of batched tensors."""
    if isinstance(examples, Mapping):
        return {k: _as_tensor(examples[k]) for k in BATCH_KEYS if k in examples}
    if len(examples) == 0:
        raise ValueError("collate: empty batch")
    keys = [k for k in BATCH_KEYS if k in examples[0]]
    return {k: torch.stack([_as_tensor(e[k]) for e in examples]) for k in keys}


def collate(
    examples: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    mask_cfg: MaskConfig,
    grid: int,
    generator: np.random.Generator | torch.Generator | int | None = None,
) -> dict[str, torch.Tensor]:
    """Stack examples into the training-batch dict (module docstring) and draw its masks."""
    from hqjepa.masks.multiblock import sample_masks

    batch = _stack(examples)
    for key in ("s2", "s1"):
        if key not in batch:
            raise KeyError(f"collate: batch has no {key!r} (keys: {sorted(batch)})")
    s2, s1 = batch["s2"], batch["s1"]
    if s2.ndim != 4 or s1.ndim != 4 or s2.shape[0] != s1.shape[0] or s2.shape[-2:] != s1.shape[-2:]:
        raise ValueError(
            f"collate: s2 {tuple(s2.shape)} and s1 {tuple(s1.shape)} must be [B, C, H, W] with the same B, H, W"
        )
    if s2.shape[-1] % grid or s2.shape[-2] % grid:
        raise ValueError(f"collate: image {tuple(s2.shape[-2:])} is not divisible into a {grid} x {grid} grid")
    masks = sample_masks(s2.shape[0], grid, mask_cfg, generator)
    out = {"s2": s2.to(torch.float32), "s1": s1.to(torch.float32), **masks.as_dict()}
    if "labels19" in batch:
        out["labels19"] = batch["labels19"].to(torch.float32)
    return out


class MaskCollator:
    """Picklable `collate` with its own random stream, for DataLoader and `iter_torch_batches`.

    seed: base seed, an int or a sequence of ints (e.g. [seed, rank, epoch] per Ray Train worker and
    epoch). In a DataLoader worker process the worker id is mixed in, so loader workers never repeat
    each other's masks. When the batch carries row keys (`key`, from `stream.decode_block`), the
    masks are drawn from (seed, keys of the batch) instead of a running stream: Ray Data collates in
    a thread pool, so the order of calls is not the order of batches, but the keys are.
    """

    def __init__(self, mask_cfg: MaskConfig, grid: int, seed: int | Sequence[int] = 0):
        self.mask_cfg, self.grid = mask_cfg, grid
        self.seed = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]
        self._rng: np.random.Generator | None = None

    def __getstate__(self) -> dict:
        return {"mask_cfg": self.mask_cfg, "grid": self.grid, "seed": self.seed, "_rng": None}

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([*self.seed, 0 if info is None else info.id + 1])
        return self._rng

    def __call__(self, examples: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Collate examples (a list of pairs, or one dict of batched columns) with fresh masks.

        With a `key` column the masks come from a generator seeded by (seed, CRC32 of the keys), so a
        batch gets the same masks whatever order the batches are collated in; otherwise from this
        collator's own running generator."""
        keys = examples.get("key") if isinstance(examples, Mapping) else None
        if keys is not None:  # masks keyed by the batch's rows: independent of collate call order
            digest = zlib.crc32(np.ascontiguousarray(np.asarray(keys), dtype="<i8").tobytes())
            return collate(examples, self.mask_cfg, self.grid, np.random.default_rng([*self.seed, digest]))
        return collate(examples, self.mask_cfg, self.grid, self._generator())
