"""`SyntheticPairs`: the one-process training dataset of synthetic S1/S2 pairs (no Ray, no files).

All scenes are rendered once at construction (numpy, vectorised) and kept at native resolution
(uint16 S2, float32 S1 dB: ~280 KB per pair); items are upsampled and normalised on access with
`synthetic_band_stats()`, exactly as Parquet shards are in `stream.decode_block`.

    ds = SyntheticPairs(512, seed=0)
    loader = DataLoader(ds, batch_size=32, shuffle=True, collate_fn=MaskCollator(cfg.mask, grid=12))

`__getitems__` fetches a whole batch in one vectorised call (torch's DataLoader uses it when present).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hqjepa.bands import REFERENCE_SIZE_PX, S1_BANDS, S2_BANDS
from hqjepa.data.synthetic import SceneBatch, render_batch
from hqjepa.data.transforms import BandStats, stack_s1, stack_s2, synthetic_band_stats


class SyntheticPairs(torch.utils.data.Dataset):
    """`n` synthetic pairs drawn with `seed`; items are dicts of s2 [12,S,S], s1 [2,S,S], labels19 [19]."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size_px: int = REFERENCE_SIZE_PX,
        max_classes: int = 6,
        stats: BandStats | None = None,
    ):
        if n < 1:
            raise ValueError(f"SyntheticPairs(n={n}): need at least one pair")
        self.size_px = size_px
        self.scenes: SceneBatch = render_batch(np.random.default_rng(seed), n, size_px, max_classes)
        self.stats = stats if stats is not None else synthetic_band_stats(size_px, max_classes)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        s2 = stack_s2({b: self.scenes.s2[b][idx] for b in S2_BANDS}, self.size_px, self.stats)
        s1 = stack_s1({b: self.scenes.s1[b][idx] for b in S1_BANDS}, self.size_px, self.stats)
        labels = torch.from_numpy(self.scenes.labels19[idx].astype(np.float32))
        return {"s2": s2, "s1": s1, "labels19": labels}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"pair {i} out of range for {len(self)} pairs")
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
