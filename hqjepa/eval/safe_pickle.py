"""Restricted (un)pickling of GeoBench metadata, with local stand-ins for geobench's classes.

GeoBench stores band metadata and task specifications as pickles: the root attribute `pickle` of
each sample's HDF5 file holds `str(pickle.dumps(attrs))`, and `task_specs.pkl` is a pickled
`geobench.task.TaskSpecifications`. A plain `pickle.load` of a user's file runs whatever the file
asks for, and the `geobench` package cannot be imported here (it pins pandas<2). So:

- `SafeUnpickler.find_class` admits exactly the globals GeoBench writes: geobench's band-info,
  label and task classes (under their current and historical module names `geobench.*`,
  `geobench.io.*`, `ccb.io.*`), each mapped to a lightweight local stand-in below; `affine.Affine`
  and `rasterio.crs.CRS` (mapped to plain records: evaluation never needs georeferencing);
  `datetime.date/datetime/time/timedelta/timezone`, `collections.OrderedDict`; and numpy's array,
  dtype and scalar reconstructors, guarded against object dtypes (numpy restores object arrays with
  a nested, unrestricted `pickle.loads`). Anything else raises `UnsafePickleError`, naming the global.
- `dumps_geobench` writes stand-in objects under geobench's own class names, so files this project
  writes (`hqjepa synth-geobench`) load with geobench's own `load_sample` too.

The stand-ins keep geobench's attribute names (`name`, `alt_names`, `spatial_resolution`,
`wavelength`, `n_classes`, `_class_names`, ...), since unpickling restores an object's `__dict__`.
"""

from __future__ import annotations

import ast
import io
import pickle
from typing import Any

import numpy as np


class GeoBenchFormatError(ValueError):
    """A GeoBench file that cannot be read; the message names the task and file."""


class UnsafePickleError(GeoBenchFormatError, pickle.UnpicklingError):
    """A pickle that refers to a global outside GeoBench's data format."""


# --- stand-ins for geobench classes ----------------------------------------------------------------


class _Record:
    """Base of the stand-ins: attributes come from the pickle's state dict."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = object.__hash__


class BandInfo(_Record):
    """geobench.dataset.BandInfo: name, alt_names, spatial_resolution (original GSD, m)."""

    def __init__(self, name: str, alt_names: tuple = (), spatial_resolution: float | None = None, **kw: Any):
        super().__init__(name=name, alt_names=tuple(alt_names), spatial_resolution=spatial_resolution, **kw)


class SpectralBand(BandInfo):
    """geobench.dataset.SpectralBand: adds `wavelength` (micrometres)."""

    def __init__(
        self, name: str, alt_names: tuple = (), spatial_resolution: float | None = None, wavelength: float | None = None
    ):
        super().__init__(name, alt_names, spatial_resolution, wavelength=wavelength)


class Sentinel1(SpectralBand):
    """geobench.dataset.Sentinel1."""


class Sentinel2(SpectralBand):
    """geobench.dataset.Sentinel2."""


class Landsat8(SpectralBand):
    """geobench.dataset.Landsat8."""


class Mask(BandInfo):
    """geobench.dataset.Mask."""


class ElevationBand(BandInfo):
    """geobench.dataset.ElevationBand."""


class MultiBand(BandInfo):
    """geobench.dataset.MultiBand: a 3-D band with `n_bands` channels."""


class HyperSpectralBands(MultiBand):
    """geobench.dataset.HyperSpectralBands."""


class CloudProbability(Mask):
    """geobench.dataset.CloudProbability (its name is always "Cloud Probability")."""

    def __init__(self, alt_names: tuple = (), spatial_resolution: float | None = None):
        super().__init__("Cloud Probability", alt_names, spatial_resolution)


class LabelType(_Record):
    """geobench.label.LabelType."""


class Classification(LabelType):
    """geobench.label.Classification: `n_classes`, class names in `_class_names`."""

    def __init__(self, n_classes: int, class_names: list[str] | None = None):
        super().__init__(n_classes=n_classes, _class_names=class_names)

    @property
    def class_names(self) -> list[str] | None:
        """Class names, if the pickle stored them."""
        return self.__dict__.get("_class_names")


class SemanticSegmentation(Classification):
    """geobench.label.SemanticSegmentation."""


class MultiLabelClassification(LabelType):
    """geobench.label.MultiLabelClassification: `n_classes`, names in `class_name` (sic)."""

    def __init__(self, n_classes: int, class_names: list[str] | None = None):
        super().__init__(n_classes=n_classes, class_name=class_names)

    @property
    def class_names(self) -> list[str] | None:
        """Class names (stored as `class_name`), if the pickle stored them."""
        return self.__dict__.get("class_name")


class SegmentationClasses(BandInfo, LabelType):
    """geobench.dataset.SegmentationClasses: the `label` band of a segmentation task."""

    def __init__(self, name: str, spatial_resolution: float, n_classes: int, class_names: list[str] | None = None):
        BandInfo.__init__(self, name, (), spatial_resolution)
        self.n_classes = n_classes
        self._class_names = class_names

    @property
    def class_names(self) -> list[str] | None:
        """Class names, if the pickle stored them."""
        return self.__dict__.get("_class_names")


class Detection(_Record):
    """geobench.label.Detection (listed so old pickles resolve; no task here uses it)."""


class TaskSpecifications(_Record):
    """geobench.task.TaskSpecifications: dataset_name, benchmark_name, patch_size, n_time_steps,
    bands_info (list of BandInfo, in the task's band order), label_type, spatial_resolution."""

    def __init__(
        self,
        dataset_name: str,
        bands_info: list,
        spatial_resolution: float,
        benchmark_name: str | None = None,
        patch_size: tuple | None = None,
        n_time_steps: int | None = None,
        label_type: Any = None,
    ):
        super().__init__(
            dataset_name=dataset_name,
            benchmark_name=benchmark_name,
            patch_size=patch_size,
            n_time_steps=n_time_steps,
            bands_info=bands_info,
            label_type=label_type,
            spatial_resolution=spatial_resolution,
        )


class _OldMetric(_Record):
    """geobench.task.{Accuracy, MultilabelAccuracy, SegmentationAccuracy}: empty, for old pickles."""


class Accuracy(_OldMetric):
    """geobench.task.Accuracy (an old pickle's metric field; nothing reads it)."""


class MultilabelAccuracy(_OldMetric):
    """geobench.task.MultilabelAccuracy (an old pickle's metric field; nothing reads it)."""


class SegmentationAccuracy(_OldMetric):
    """geobench.task.SegmentationAccuracy (an old pickle's metric field; nothing reads it)."""


class GeoTransform:
    """affine.Affine as a record of its coefficients (a, b, c, d, e, f[, g, h, i]).

    affine < 3 pickled a namedtuple (constructor arguments); affine >= 3 pickles arguments plus
    a state dict {a..i}. Both land here. `to_affine()` gives the real object when needed.
    """

    def __new__(cls, *args: float) -> GeoTransform:
        """A record of the affine coefficients, as affine < 3's namedtuple pickle calls it."""
        self = super().__new__(cls)
        self.coefficients = tuple(float(a) for a in args)
        return self

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict) and all(k in state for k in "abcdef"):
            self.coefficients = tuple(float(state[k]) for k in "abcdefghi" if k in state)

    def to_affine(self) -> Any:
        """The `affine.Affine` of the first six coefficients (imports affine)."""
        import affine

        return affine.Affine(*self.coefficients[:6])

    def __repr__(self) -> str:
        return f"GeoTransform{self.coefficients}"


class CRSRecord:
    """rasterio.crs.CRS as its WKT (rasterio pickles `CRS()` then a WKT or dict state)."""

    def __setstate__(self, state: Any) -> None:
        self.wkt = state if isinstance(state, str) else None
        self.params = state if isinstance(state, dict) else None

    def to_rasterio(self) -> Any:
        """The `rasterio.crs.CRS` of the stored WKT or parameter dict (imports rasterio)."""
        from rasterio.crs import CRS

        return CRS.from_wkt(self.wkt) if self.wkt else CRS.from_dict(self.params or {})

    def __repr__(self) -> str:
        return f"CRSRecord({(self.wkt or str(self.params))[:40]}...)"


# geobench's class name -> stand-in, and the module each name is written under today
_DATASET_CLASSES = (
    BandInfo,
    SpectralBand,
    Sentinel1,
    Sentinel2,
    Landsat8,
    Mask,
    ElevationBand,
    MultiBand,
    HyperSpectralBands,
    CloudProbability,
    SegmentationClasses,
)
_LABEL_CLASSES = (LabelType, Classification, SemanticSegmentation, MultiLabelClassification, Detection)
_TASK_CLASSES = (TaskSpecifications, Accuracy, MultilabelAccuracy, SegmentationAccuracy)

STANDINS: dict[str, type] = {c.__name__: c for c in _DATASET_CLASSES + _LABEL_CLASSES + _TASK_CLASSES}
GEOBENCH_NAME: dict[type, tuple[str, str]] = {
    **{c: ("geobench.dataset", c.__name__) for c in _DATASET_CLASSES},
    **{c: ("geobench.label", c.__name__) for c in _LABEL_CLASSES},
    **{c: ("geobench.task", c.__name__) for c in _TASK_CLASSES},
}
# `geobench/__init__.py` re-exports everything and aliases the old `geobench.io.*` / `ccb.io.*` names
_GEOBENCH_MODULES = frozenset(
    {
        "geobench",
        "geobench.dataset",
        "geobench.label",
        "geobench.task",
        "geobench.io",
        "geobench.io.dataset",
        "geobench.io.label",
        "geobench.io.task",
        "ccb",
        "ccb.io",
        "ccb.io.dataset",
        "ccb.io.label",
        "ccb.io.task",
    }
)


# --- numpy, guarded ---------------------------------------------------------------------------------


def _np_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{name}")


def _safe_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:  # object arrays are restored with an unrestricted pickle.loads
        raise UnsafePickleError("refusing a numpy object dtype in a GeoBench pickle")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing ndarray subclass {subtype!r} in a GeoBench pickle")
    return _np_module("multiarray")._reconstruct(subtype, shape, dtype)


def _safe_scalar(dtype: Any, obj: Any = None) -> Any:
    if np.dtype(dtype).hasobject:
        raise UnsafePickleError("refusing a numpy object scalar in a GeoBench pickle")
    return _np_module("multiarray").scalar(dtype, obj) if obj is not None else _np_module("multiarray").scalar(dtype)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if np.dtype(dtype).hasobject:
        raise UnsafePickleError("refusing a numpy object array in a GeoBench pickle")
    return _np_module("numeric")._frombuffer(buf, dtype, shape, order)


_NUMPY: dict[tuple[str, str], Any] = {("numpy", "dtype"): _safe_dtype, ("numpy", "ndarray"): np.ndarray}
for _m in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x spellings
    _NUMPY[(_m, "_reconstruct")] = _safe_reconstruct
    _NUMPY[(_m, "scalar")] = _safe_scalar
for _m in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY[(_m, "_frombuffer")] = _safe_frombuffer

_OTHER: dict[tuple[str, str], Any] = {
    ("affine", "Affine"): GeoTransform,
    ("rasterio.crs", "CRS"): CRSRecord,
    ("rasterio._crs", "_CRS"): CRSRecord,
}
_ALLOWED_STDLIB = frozenset(
    {
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("collections", "OrderedDict"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that reconstructs only what GeoBench writes (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        """The stand-in, guarded numpy constructor or allowed stdlib class for (module, name);
        UnsafePickleError for anything else."""
        key = (module, name)
        if key in _NUMPY:
            return _NUMPY[key]
        if key in _OTHER:
            return _OTHER[key]
        if key in _ALLOWED_STDLIB:
            return super().find_class(module, name)
        if module in _GEOBENCH_MODULES and name in STANDINS:
            return STANDINS[name]
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: it is not part of GeoBench's data format "
            "(allowed: geobench band/label/task classes, affine.Affine, rasterio.crs.CRS, datetime, "
            "numpy arrays)"
        )


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes, admitting only GeoBench's classes."""
    return SafeUnpickler(io.BytesIO(data)).load()


def safe_load(fp: io.BufferedIOBase) -> Any:
    """Unpickle from a binary file, admitting only GeoBench's classes."""
    return SafeUnpickler(fp).load()


def loads_attr(text: str) -> Any:
    """Decode an HDF5 `pickle` attribute: `str(pickle.dumps(obj))` -> bytes -> object.

    `ast.literal_eval` only parses literals, so this step runs no code either.
    """
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise GeoBenchFormatError(f"attribute is not a bytes literal ({e})") from None
    if not isinstance(data, bytes):
        raise GeoBenchFormatError(f"attribute holds {type(data).__name__}, expected pickled bytes")
    return safe_loads(data)


# --- writing under geobench's names -----------------------------------------------------------------


class _GeoBenchPickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be extended
    """Writes a stand-in class as the global `geobench.<module>.<Class>`.

    The stock pickler refuses, since it checks that the named module can be imported and holds the
    same object; geobench cannot be imported here, and the reader maps the name back to the stand-in.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = GEOBENCH_NAME.get(obj) if isinstance(obj, type) else None
        if target is None:
            return super().save_global(obj, name)
        module, qualname = target
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def dumps_geobench(obj: Any, protocol: int = 4) -> bytes:
    """Pickle `obj` with stand-ins written under geobench's class names (protocol 4, as geobench)."""
    buf = io.BytesIO()
    _GeoBenchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()
