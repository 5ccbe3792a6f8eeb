"""A torch Dataset over one GeoBench split, in the encoder's band order, normalised and resized.

x: float32 [C, S, S] with C = the encoder's bands (e.g. B01..B12) in its order:
    x_b = (band_b - mean_b) / std_b with the task's band_stats.json (train-split statistics, as
    GeoBench's own experiments normalise), a missing band = 0 (= its mean; see `band_map`),
    then resized to S x S (`input_size`), a multiple of the encoder's patch size, with the
    project's resampling (`hqjepa.data.transforms.resample_array`: bilinear up, area down).
y: int64 class index (multi-class) | float32 [n_classes] 0/1 (multi-label) |
   int64 [H, W] mask at the label's own size (segmentation; never resized, metrics are computed on
   GeoBench's pixels: the decoder upsamples its logits to the mask).

Size rule (`input_size`): every task keeps its 10 m ground sampling; its native size is rounded
to the nearest multiple of the encoder's patch size and the bands are resampled to it
(m-so2sat 32 -> 30 px, m-eurosat / m-brick-kiln 64 -> 60, m-bigearthnet 120 -> 120,
segmentation 256 -> 260 with patch 10), so a token always covers ~100 m x 100 m as in pretraining;
the encoder's 2-D sin-cos positions are computed for any grid. (Resizing a 64 px scene to the
pretraining 120 px would show the encoder 5 m pixels it never saw.) `run.classification_size` /
`run.segmentation_size` in configs/eval.yaml override the rule with a fixed size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hqjepa.data.transforms import resample_array
from hqjepa.eval.band_map import BandMapping, map_bands
from hqjepa.eval.geobench import GeoBenchTask
from hqjepa.eval.safe_pickle import GeoBenchFormatError


def native_input_size(native_px: int, patch_size: int) -> int:
    """Native size rounded to the nearest multiple of the patch size (at least one patch)."""
    return max(patch_size, int(round(native_px / patch_size)) * patch_size)


class GeoBenchSplit(Dataset):
    """One split of one task as (x, y) tensors (see the module docstring)."""

    def __init__(
        self,
        task: GeoBenchTask,
        split: str,
        target_bands: Sequence[str],
        input_size: int,
        partition: str = "default",
        max_missing_bands: int = 2,
        mapping: BandMapping | None = None,
        limit: int | None = None,
    ):
        self.task = task
        self.split = split
        self.names = task.split(split, partition)[:limit]
        if not self.names:
            raise GeoBenchFormatError(f"{task.name}: split {split!r} of partition {partition!r} is empty")
        self.mapping = mapping or map_bands(task.name, task.band_infos, target_bands, max_missing_bands)
        self.input_size = int(input_size)
        stats = task.band_stats()
        self.sources = [self.mapping.source[b] for b in self.mapping.target]
        present = [s for s in self.sources if s is not None]
        lacking = [s for s in present if s not in stats]
        if lacking:
            raise GeoBenchFormatError(f"{task.name}: band_stats.json has no entry for {', '.join(lacking)}")
        self.mean = {s: stats[s].mean for s in present}
        self.std = {s: (stats[s].std if stats[s].std > 0 else 1.0) for s in present}
        self._present = present

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.task.read_sample(self.names[i], bands=self._present)
        planes = []
        size = self.input_size
        for source in self.sources:
            if source is None:
                planes.append(torch.zeros(size, size))
                continue
            a = torch.from_numpy(np.asarray(sample.bands[source], dtype=np.float32))
            if a.ndim != 2:
                raise GeoBenchFormatError(
                    f"{self.task.name}: band {source!r} of {self.names[i]}.hdf5 has "
                    f"shape {tuple(a.shape)}, expected a 2-D image"
                )
            a = (a - self.mean[source]) / self.std[source]
            a = resample_array(a, size)  # the project's rule: bilinear up, area averaging down
            planes.append(a)
        x = torch.stack(planes)
        kind = self.task.info.kind
        if kind == "multilabel":
            y = torch.as_tensor(sample.label, dtype=torch.float32)
        else:
            y = torch.as_tensor(sample.label, dtype=torch.int64)
        return x, y
