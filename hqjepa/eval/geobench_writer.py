"""Write GeoBench's on-disk format with h5py, mirroring the `geobench` package's own writers.

Each function restates one geobench writer (geobench 1.0.0, geobench/dataset.py and task.py):
- `write_sample` = `write_sample_hdf5`: one h5py dataset per band descriptor (band name, plus
  "_YYYY-MM-DD" for a dated band), a segmentation mask as the band "label", and the root attribute
  `pickle` = str(pickle.dumps({descriptor: {date, date_id, spatial_resolution, band_info,
  meta_info, transform, crs}, "bands_order": [...], "label": <int or multi-hot array>})).
- `write_task_specs` = `TaskSpecifications.save` (pickle protocol 4).
- `write_partition` = `Partition.save` (json, indent 2).
- `write_band_stats` = geobench's bandstats script: `compute_dataset_statistics` (up to 1000 random
  values per image and band, train split) then json.dump({band: Stats.to_dict()}, indent=4,
  sort_keys=True).
Pickles name geobench's classes (`geobench.dataset.Sentinel2`, ...; see `safe_pickle.dumps_geobench`),
so geobench's own `load_sample` reads these files as well as this project's reader does.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hqjepa.eval.safe_pickle import SegmentationClasses, TaskSpecifications, dumps_geobench


@dataclass
class BandArray:
    """One band of a sample, as geobench.dataset.Band holds it."""

    data: np.ndarray
    band_info: Any
    spatial_resolution: float
    date: datetime.date | None = None
    transform: Any = None
    crs: Any = None
    meta_info: Any = None

    @property
    def descriptor(self) -> str:
        """geobench `Band.get_descriptor`: the band name, plus `_YYYY-MM-DD` when dated."""
        name = self.band_info.name
        return name if self.date is None else f"{name}_{self.date.strftime('%Y-%m-%d')}"


def write_sample(task_dir: str | Path, sample_name: str, bands: Sequence[BandArray], label: Any) -> Path:
    """One `<sample_name>.hdf5` (label: int, multi-hot array, or a BandArray whose info is the
    SegmentationClasses band named "label")."""
    path = Path(task_dir) / f"{sample_name}.hdf5"
    attrs: dict[str, Any] = {}
    order = []
    all_bands = list(bands)
    if isinstance(label, BandArray):
        if not isinstance(label.band_info, SegmentationClasses) or label.band_info.name != "label":
            raise ValueError("a label band must carry SegmentationClasses named 'label'")
        all_bands.append(label)
    elif label is not None:
        attrs["label"] = label
    with h5py.File(path, "w") as fp:
        for band in all_bands:
            d = band.descriptor
            fp.create_dataset(name=d, data=band.data)
            attrs[d] = dict(
                date=band.date,
                date_id=band.date,
                spatial_resolution=band.spatial_resolution,
                band_info=band.band_info,
                meta_info=band.meta_info,
                transform=band.transform,
                crs=band.crs,
            )
            order.append(d)
        attrs["bands_order"] = order
        fp.attrs["pickle"] = str(dumps_geobench(attrs))
    return path


def write_task_specs(task_dir: str | Path, specs: TaskSpecifications) -> Path:
    """Write `task_specs.pkl` (stand-ins pickled under geobench's class names); returns its path."""
    path = Path(task_dir) / "task_specs.pkl"
    path.write_bytes(dumps_geobench(specs, protocol=4))
    return path


def write_partition(task_dir: str | Path, name: str, partition: Mapping[str, Sequence[str]]) -> Path:
    """Write `<name>_partition.json` ({split: [sample names]}); returns its path."""
    path = Path(task_dir) / f"{name}_partition.json"
    with open(path, "w") as fd:
        json.dump({k: list(v) for k, v in partition.items()}, fd, indent=2)
    return path


def band_statistics(values: np.ndarray) -> dict[str, float]:
    """geobench.dataset.compute_stats: min, max, mean, std, median and six percentiles."""
    q01, q1, q5, median, q95, q99, q999 = np.percentile(values, q=[0.1, 1, 5, 50, 95, 99, 99.9])
    return {
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "median": float(median),
        "percentile_0_1": float(q01),
        "percentile_1": float(q1),
        "percentile_5": float(q5),
        "percentile_95": float(q95),
        "percentile_99": float(q99),
        "percentile_99_9": float(q999),
    }


@dataclass
class StatsAccumulator:
    """Collects up to `per_image` random values per image and band, as compute_dataset_statistics."""

    rng: np.random.Generator
    per_image: int = 1000
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, name: str, data: Any) -> None:
        """Keep a random subset of at most `per_image` values of one band of one image."""
        flat = np.asarray(data).ravel()
        if flat.size > self.per_image:
            flat = self.rng.choice(flat, size=self.per_image, replace=False)
        self.values.setdefault(name, []).append(flat)

    def stats(self) -> dict[str, dict[str, float]]:
        """`band_statistics` of every band over all values kept."""
        return {k: band_statistics(np.hstack(v)) for k, v in self.values.items()}


def write_band_stats(task_dir: str | Path, stats: Mapping[str, Mapping[str, float]]) -> Path:
    """Write `band_stats.json` ({band: statistics}, as geobench lays it out); returns its path."""
    path = Path(task_dir) / "band_stats.json"
    with open(path, "w", encoding="utf8") as fp:
        json.dump({k: dict(v) for k, v in stats.items()}, fp, indent=4, sort_keys=True)
    return path
