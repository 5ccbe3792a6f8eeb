"""The six GeoBench tasks of the paper and a reader for GeoBench's on-disk format.

Layout (GeoBench v1.0, as the `geobench` package writes it):

    $GEO_BENCH_DIR/classification_v1.0/{m-bigearthnet, m-eurosat, m-so2sat, m-brick-kiln}/
    $GEO_BENCH_DIR/segmentation_v1.0/{m-SA-crop-type, m-cashew-plant}/
        task_specs.pkl              pickled geobench.task.TaskSpecifications (bands_info in order)
        default_partition.json      {"train": [sample names], "valid": [...], "test": [...]}
        <other>_partition.json      e.g. 0.10x_train_partition.json
        band_stats.json             {band name: {mean, std, min, max, median, percentile_*}}
        <sample>.hdf5               one file per sample (geobench.dataset.write_sample_hdf5)

A sample file holds one h5py dataset per band, named by the band's descriptor (band name, plus
"_YYYY-MM-DD" when the band has a date, as in m-cashew-plant), and the root attribute `pickle` =
`str(pickle.dumps(attrs))` with attrs = {descriptor: {band_info, date, spatial_resolution, transform,
crs, ...}, "bands_order": [descriptors in order], "label": int or multi-hot array}; a segmentation
mask is the band whose descriptor starts with "label". h5py lists datasets alphabetically, which is
not the band order (m-so2sat interleaves S1 and S2 names), so bands are read by name only.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hqjepa.eval.safe_pickle import GeoBenchFormatError, TaskSpecifications, loads_attr, safe_load

ENV_VAR = "GEO_BENCH_DIR"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TaskInfo:
    """What the paper evaluates on a task: its kind, metric and GeoBench v1.0 image size."""

    name: str
    benchmark: str
    kind: str  # "multiclass" | "multilabel" | "segmentation"
    metric: str  # "Accuracy" | "F1" | "Jaccard"
    n_classes: int
    size_px: int
    short: str  # column name of the paper's Table 1


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("m-bigearthnet", "classification_v1.0", "multilabel", "F1", 43, 120, "m-bigearthnet"),
        TaskInfo("m-eurosat", "classification_v1.0", "multiclass", "Accuracy", 10, 64, "m-eurosat"),
        TaskInfo("m-so2sat", "classification_v1.0", "multiclass", "Accuracy", 17, 32, "m-so2sat"),
        TaskInfo("m-brick-kiln", "classification_v1.0", "multiclass", "Accuracy", 2, 64, "m-brick-kiln"),
        TaskInfo("m-SA-crop-type", "segmentation_v1.0", "segmentation", "Jaccard", 10, 256, "m-SA-crop"),
        TaskInfo("m-cashew-plant", "segmentation_v1.0", "segmentation", "Jaccard", 7, 256, "m-cashew"),
    )
}


def parse_tasks(text: str | Sequence[str] | None) -> list[str]:
    """ "all", None or a comma list -> task names in the paper's column order; unknown names refused."""
    if text is None or text == "all" or (not isinstance(text, str) and list(text) == ["all"]):
        return list(TASKS)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    return [t for t in TASKS if t in names]


def resolve_benchmark_dir(path: str | os.PathLike | None = None) -> Path:
    """`--benchmark-dir` if given, else $GEO_BENCH_DIR; the folder holding classification_v1.0/ etc."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        raise GeoBenchFormatError(f"no GeoBench directory: pass --benchmark-dir or set {ENV_VAR}")
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise GeoBenchFormatError(f"GeoBench directory {root} does not exist")
    return root


@dataclass
class BandStats:
    """One entry of band_stats.json (the fields geobench.dataset.Stats writes)."""

    mean: float
    std: float
    min: float | None = None
    max: float | None = None
    median: float | None = None


@dataclass
class Sample:
    """One GeoBench sample: bands by GeoBench name, and its label.

    label: int (multi-class), int array [n_classes] (multi-label), int array [H, W] (segmentation).
    """

    name: str
    bands: dict[str, np.ndarray]
    label: Any


class GeoBenchTask:
    """Reader for one task directory (see the module docstring for the format)."""

    def __init__(self, root: str | os.PathLike, name: str):
        if name not in TASKS:
            raise GeoBenchFormatError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
        self.name = name
        self.info = TASKS[name]
        root = Path(root)
        candidates = [root / self.info.benchmark / name, root / name]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            raise GeoBenchFormatError(f"{name}: task directory not found under {root} (looked for {candidates[0]})")
        self.dir = found
        self.specs = self._load_specs()
        self.band_infos = list(self.specs.bands_info)
        self.band_names = [b.name for b in self.band_infos]
        self.label_type = self.specs.label_type
        n = getattr(self.label_type, "n_classes", None)
        if n != self.info.n_classes:
            raise GeoBenchFormatError(
                f"{name}: task_specs.pkl has {n} classes, GeoBench's {name} has {self.info.n_classes}"
            )
        self.n_classes = int(n)
        self._stats: dict[str, BandStats] | None = None

    def _error(self, what: str) -> GeoBenchFormatError:
        return GeoBenchFormatError(f"{self.name}: {what}")

    def _load_specs(self) -> Any:
        path = self.dir / "task_specs.pkl"
        if not path.is_file():
            raise self._error(f"{path} is missing")
        try:
            with open(path, "rb") as fp:
                specs = safe_load(fp)
        except GeoBenchFormatError as e:
            raise self._error(f"{path}: {e}") from None
        except Exception as e:  # truncated or not a pickle
            raise self._error(f"{path} is not a readable task-specs pickle ({type(e).__name__}: {e})") from None
        if not isinstance(specs, TaskSpecifications) or not getattr(specs, "bands_info", None):
            raise self._error(f"{path} does not hold TaskSpecifications with bands_info")
        return specs

    # --- partitions and stats -------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """Names of the partitions present (`default`, `0.10x_train`, ...)."""
        return sorted(p.name[: -len("_partition.json")] for p in self.dir.glob("*_partition.json"))

    def partition(self, name: str = "default") -> dict[str, list[str]]:
        """The named partition file as {train, valid, test: [sample names]}; GeoBenchFormatError when it
        is missing, not JSON, or has other keys."""
        path = self.dir / f"{name}_partition.json"
        if not path.is_file():
            raise self._error(f"partition {path.name} is missing (present: {', '.join(self.partitions()) or 'none'})")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise self._error(f"{path.name} is not valid JSON ({e})") from None
        bad = [k for k in data if k not in SPLITS]
        if bad or not isinstance(data, dict):
            raise self._error(f"{path.name} has keys {bad}; a partition has only {', '.join(SPLITS)}")
        return {k: list(data.get(k, [])) for k in SPLITS}

    def split(self, split: str, partition: str = "default") -> list[str]:
        """Sample names of one split (train / valid / test) of a partition."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.partition(partition)[split]

    def band_stats(self) -> dict[str, BandStats]:
        """band_stats.json: per-band statistics of the train split (geobench's bandstats script)."""
        if self._stats is None:
            path = self.dir / "band_stats.json"
            try:
                raw = json.loads(path.read_text())
            except FileNotFoundError:
                raise self._error(f"{path.name} is missing") from None
            except ValueError as e:
                raise self._error(f"{path.name} is not valid JSON ({e})") from None
            stats = {}
            for band, d in raw.items():
                try:
                    stats[band] = BandStats(
                        mean=float(d["mean"]),
                        std=float(d["std"]),
                        min=d.get("min"),
                        max=d.get("max"),
                        median=d.get("median"),
                    )
                except (KeyError, TypeError, ValueError):
                    raise self._error(f"{path.name}: entry {band!r} lacks a numeric mean/std") from None
            self._stats = stats
        return self._stats

    # --- samples --------------------------------------------------------------------------------

    def sample_path(self, sample_name: str) -> Path:
        """The HDF5 file of one sample: `<task dir>/<sample_name>.hdf5`."""
        return self.dir / f"{sample_name}.hdf5"

    def read_sample(self, sample_name: str, bands: Sequence[str] | None = None) -> Sample:
        """Read the named bands (default: all of the task's bands) and the label of one sample."""
        path = self.sample_path(sample_name)
        wanted = list(self.band_names if bands is None else bands)
        if not path.is_file():
            raise self._error(f"sample file {path.name} (listed in the partition) does not exist")
        try:
            with h5py.File(path, "r") as fp:
                if "pickle" not in fp.attrs:
                    raise self._error(f"sample file {path.name} has no 'pickle' attribute (not written by geobench)")
                try:
                    attrs = loads_attr(fp.attrs["pickle"])
                except GeoBenchFormatError as e:
                    raise self._error(f"sample file {path.name}: {e}") from None
                order = list(attrs.get("bands_order", fp.keys()))
                by_name: dict[str, str] = {}
                label_key = None
                for descriptor in order:
                    if descriptor.startswith("label"):
                        label_key = descriptor
                        continue
                    info = attrs.get(descriptor, {}).get("band_info")
                    band_name = getattr(info, "name", None) or descriptor
                    by_name.setdefault(band_name, descriptor)  # first date of a time series
                out = {}
                for band in wanted:
                    descriptor = by_name.get(band)
                    if descriptor is None or descriptor not in fp:
                        raise self._error(
                            f"sample file {path.name} lacks band {band!r} listed in task_specs.pkl "
                            f"(has: {', '.join(by_name)})"
                        )
                    out[band] = np.asarray(fp[descriptor][()])
                if label_key is not None:
                    label = np.asarray(fp[label_key][()])
                elif "label" in attrs:
                    label = attrs["label"]
                else:
                    raise self._error(f"sample file {path.name} has no label")
        except GeoBenchFormatError:
            raise
        except (OSError, KeyError, ValueError, EOFError, AttributeError, TypeError, pickle.UnpicklingError) as e:
            raise self._error(
                f"sample file {path.name} is corrupt or not HDF5 ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        return Sample(sample_name, out, self._check_label(path.name, label))

    def _check_label(self, file: str, label: Any) -> Any:
        kind, n = self.info.kind, self.n_classes
        if kind == "multiclass":
            if isinstance(label, np.ndarray) and label.size == 1:
                label = label.item()
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not 0 <= label < n:
                raise self._error(f"sample file {file}: label {label!r} is not a class index in [0, {n})")
            return int(label)
        arr = np.asarray(label)
        if kind == "multilabel":
            if arr.shape != (n,) or not np.isin(arr, (0, 1)).all():
                raise self._error(f"sample file {file}: label of shape {arr.shape} is not a {n}-long 0/1 vector")
            return arr.astype(np.int64)
        if arr.ndim != 2 or arr.min(initial=0) < 0 or arr.max(initial=0) >= n:
            raise self._error(f"sample file {file}: label mask of shape {arr.shape} with values outside [0, {n})")
        return arr.astype(np.int64)
