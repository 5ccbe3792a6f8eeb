"""The GeoBench reader against files written by geobench's OWN writers (tests/data/geobench).

`expected.json` was recorded by geobench 1.0.0's own `load_sample` + `pack_to_3d` when the fixtures
were made (tests/data/geobench/make_fixtures.py), so these tests compare the project's reader with
geobench's reading, not with the project's idea of the format.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hqjepa.bands import S2_BANDS
from hqjepa.eval.band_map import map_bands, s2_band_of
from hqjepa.eval.dataset import GeoBenchSplit, native_input_size
from hqjepa.eval.geobench import TASKS, GeoBenchTask, parse_tasks, resolve_benchmark_dir
from hqjepa.eval.safe_pickle import (
    GeoBenchFormatError,
    Sentinel1,
    Sentinel2,
    TaskSpecifications,
    UnsafePickleError,
    dumps_geobench,
    loads_attr,
    safe_loads,
)

FIXTURES = Path(__file__).parent / "data" / "geobench"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def test_fixtures_were_written_by_geobench_itself():
    assert EXPECTED["versions"]["geobench"] == "1.0.0"
    assert EXPECTED["versions"]["numpy"].startswith("1.")


@pytest.mark.parametrize("name", list(TASKS))
def test_reader_matches_geobench_reading(name):
    task = GeoBenchTask(FIXTURES, name)
    exp = EXPECTED["tasks"][name]
    assert task.dir == FIXTURES / exp["dir"]
    assert task.band_names == exp["band_names"]  # order from the pickled task specs
    assert type(task.label_type).__name__ == exp["label_type"]
    assert task.n_classes == exp["n_classes"]
    assert task.partition("default") == exp["partitions"]["default"]
    assert task.partition("0.50x_train") == exp["partitions"]["0.50x_train"]
    assert task.partitions() == ["0.50x_train", "default"]
    for sample_name, es in exp["samples"].items():
        s = task.read_sample(sample_name)
        assert list(s.bands) == es["band_names"]
        means = [float(np.asarray(s.bands[b], np.float32).mean()) for b in task.band_names]
        np.testing.assert_allclose(means, es["band_means"], rtol=1e-6)
        assert [*s.bands[task.band_names[0]].shape, len(s.bands)] == es["shape"]
        if exp["label_type"] == "SegmentationClasses":
            assert list(s.label.shape) == es["label"]["shape"]
            assert np.bincount(s.label.ravel(), minlength=task.n_classes).tolist() == es["label"]["counts"]
        elif exp["label_type"] == "MultiLabelClassification":
            assert s.label.tolist() == es["label"]
        else:
            assert s.label == es["label"]


def test_bands_are_read_by_name_not_by_hdf5_position():
    # h5py lists m-so2sat's datasets alphabetically, interleaving S1 and S2 names
    sample = EXPECTED["tasks"]["m-so2sat"]["samples"]["id_0000"]
    assert sample["h5py_keys"] != sample["bands_order"]
    task = GeoBenchTask(FIXTURES, "m-so2sat")
    s = task.read_sample("id_0000", bands=["02 - Blue", "01 - VH.Real"])
    # fixture pixels encode the band's position k in the task's list: 1000 (k + 1) + noise
    assert 9000 <= s.bands["02 - Blue"].mean() < 9200  # k = 8: after the 8 S1 components
    assert s.bands["01 - VH.Real"].mean() < 1.0  # S1 components are small floats
    cashew = GeoBenchTask(FIXTURES, "m-cashew-plant")  # dated bands: "02 - Blue_2019-11-10"
    with h5py.File(cashew.sample_path("id_0000")) as f:
        assert "02 - Blue_2019-11-10" in f and "02 - Blue" not in f
    assert 2000 <= cashew.read_sample("id_0000", ["02 - Blue"]).bands["02 - Blue"].mean() < 2200


def test_band_stats_and_specs():
    task = GeoBenchTask(FIXTURES, "m-eurosat")
    stats = task.band_stats()
    assert set(task.band_names) <= set(stats) and "label" in stats
    assert 2000 <= stats["02 - Blue"].mean < 2200 and stats["02 - Blue"].std > 0
    assert isinstance(task.specs, TaskSpecifications)
    assert task.specs.patch_size == (64, 64)
    assert task.label_type.class_names[0] == "AnnualCrop"
    ben = GeoBenchTask(FIXTURES, "m-bigearthnet")
    assert ben.label_type.class_names[-1] == "Sea and ocean"
    # georeferencing objects come back as plain records (rasterio CRS as WKT, affine coefficients)
    with h5py.File(GeoBenchTask(FIXTURES, "m-SA-crop-type").sample_path("id_0000")) as f:
        attrs = loads_attr(f.attrs["pickle"])
    first = attrs[attrs["bands_order"][0]]
    assert first["transform"].coefficients[:6] == (10.0, 0.0, 331040.0, 0.0, -10.0, -3714560.0)
    assert "UTM zone 34N" in first["crs"].wkt
    assert first["transform"].to_affine().c == 331040.0


def test_band_mapping_per_task():
    so2sat = GeoBenchTask(FIXTURES, "m-so2sat")
    m = map_bands("m-so2sat", so2sat.band_infos, S2_BANDS, max_missing=2)
    assert m.missing == ("B01", "B09")
    assert m.source["B8A"] == "08A - Vegetation Red Edge" and m.source["B02"] == "02 - Blue"
    assert set(m.dropped) == {b.name for b in so2sat.band_infos if isinstance(b, Sentinel1)}
    assert s2_band_of(so2sat.band_infos[0]) is None  # "01 - VH.Real" is not B01
    with pytest.raises(GeoBenchFormatError, match=r"m-so2sat: provides 10 of the encoder's 12 bands; missing B01, B09"):
        map_bands("m-so2sat", so2sat.band_infos, S2_BANDS, max_missing=1)
    eurosat = map_bands("m-eurosat", GeoBenchTask(FIXTURES, "m-eurosat").band_infos, S2_BANDS)
    assert eurosat.missing == () and eurosat.dropped == ("10 - SWIR - Cirrus",)
    crop = map_bands("m-SA-crop-type", GeoBenchTask(FIXTURES, "m-SA-crop-type").band_infos, S2_BANDS)
    assert crop.missing == () and crop.dropped == ("Cloud Probability",)
    ben = map_bands("m-bigearthnet", GeoBenchTask(FIXTURES, "m-bigearthnet").band_infos, S2_BANDS)
    assert [ben.source[b][:3] for b in S2_BANDS] == [
        "01 ",
        "02 ",
        "03 ",
        "04 ",
        "05 ",
        "06 ",
        "07 ",
        "08 ",
        "08A",
        "09 ",
        "11 ",
        "12 ",
    ]


def test_dataset_normalises_fills_and_resizes():
    task = GeoBenchTask(FIXTURES, "m-so2sat")
    ds = GeoBenchSplit(task, "train", S2_BANDS, input_size=32)  # native size: no resampling
    x, y = ds[0]
    assert x.shape == (12, 32, 32) and y.dtype.is_floating_point is False
    stats = task.band_stats()
    raw = task.read_sample(ds.names[0], ["02 - Blue"]).bands["02 - Blue"].astype(np.float64)
    np.testing.assert_allclose(x[1].numpy(), (raw - stats["02 - Blue"].mean) / stats["02 - Blue"].std, rtol=1e-5)
    assert float(x[0].abs().max()) == 0.0 and float(x[9].abs().max()) == 0.0  # B01, B09: the band mean
    x40, _ = GeoBenchSplit(task, "train", S2_BANDS, input_size=40)[0]
    assert x40.shape == (12, 40, 40) and abs(float(x40[1].mean() - x[1].mean())) < 0.01
    seg = GeoBenchSplit(GeoBenchTask(FIXTURES, "m-cashew-plant"), "test", S2_BANDS, input_size=30)
    xs, ys = seg[0]
    assert xs.shape == (12, 30, 30) and ys.shape == (32, 32)  # the mask keeps its pixels
    assert [native_input_size(n, 10) for n in (32, 64, 120, 256, 4)] == [30, 60, 120, 260, 10]


def _copy_task(tmp_path: Path, name: str) -> Path:
    src = FIXTURES / TASKS[name].benchmark / name
    dst = tmp_path / TASKS[name].benchmark / name
    shutil.copytree(src, dst)
    return dst


def test_corrupt_and_incomplete_samples_are_named(tmp_path):
    d = _copy_task(tmp_path, "m-eurosat")
    (d / "id_0001.hdf5").write_bytes((d / "id_0001.hdf5").read_bytes()[:5000])  # truncated
    task = GeoBenchTask(tmp_path, "m-eurosat")
    with pytest.raises(GeoBenchFormatError, match=r"^m-eurosat: sample file id_0001.hdf5 is corrupt or not HDF5"):
        task.read_sample("id_0001")
    with h5py.File(d / "id_0002.hdf5", "a") as f:  # a band removed
        del f["04 - Red"]
    with pytest.raises(GeoBenchFormatError, match=r"m-eurosat: sample file id_0002.hdf5 lacks band '04 - Red'"):
        task.read_sample("id_0002")
    (d / "id_0003.hdf5").unlink()
    with pytest.raises(
        GeoBenchFormatError, match=r"sample file id_0003.hdf5 \(listed in the partition\) does not exist"
    ):
        task.read_sample("id_0003")
    (d / "band_stats.json").write_text("{not json")
    with pytest.raises(GeoBenchFormatError, match=r"m-eurosat: band_stats.json is not valid JSON"):
        task.band_stats()
    with pytest.raises(GeoBenchFormatError, match=r"partition 1.00x_train_partition.json is missing"):
        task.partition("1.00x_train")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_foreign_globals(tmp_path):
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        safe_loads(pickle.dumps(_Evil()))
    with pytest.raises(UnsafePickleError, match=r"numpy object dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(UnsafePickleError, match=r"builtins.eval"):
        safe_loads(pickle.dumps(eval))
    # a task_specs.pkl carrying a payload: the task is refused with the file named, nothing runs
    d = _copy_task(tmp_path, "m-brick-kiln")
    (d / "task_specs.pkl").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(GeoBenchFormatError, match=r"m-brick-kiln: .*task_specs.pkl: refusing to unpickle"):
        GeoBenchTask(tmp_path, "m-brick-kiln")
    # a sample whose attribute pickle smuggles a global
    d = _copy_task(tmp_path, "m-eurosat")
    with h5py.File(d / "id_0000.hdf5", "a") as f:
        f.attrs["pickle"] = str(pickle.dumps({"bands_order": [], "label": _Evil()}))
    with pytest.raises(GeoBenchFormatError, match=r"m-eurosat: sample file id_0000.hdf5: refusing to unpickle"):
        GeoBenchTask(tmp_path, "m-eurosat").read_sample("id_0000")


def test_stand_ins_are_written_under_geobench_names():
    spec = TaskSpecifications("m-x", [Sentinel2("02 - Blue", ("2",), 10, 0.49)], 10, label_type=None)
    data = dumps_geobench(spec)
    assert b"geobench.task" in data and b"geobench.dataset" in data and b"hqjepa" not in data
    back = safe_loads(data)
    assert isinstance(back, TaskSpecifications) and back.bands_info == spec.bands_info


def test_benchmark_dir_from_flag_or_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GEO_BENCH_DIR", str(FIXTURES))
    assert resolve_benchmark_dir() == FIXTURES
    assert resolve_benchmark_dir(tmp_path) == tmp_path  # the flag wins
    monkeypatch.delenv("GEO_BENCH_DIR")
    with pytest.raises(GeoBenchFormatError, match="--benchmark-dir or set GEO_BENCH_DIR"):
        resolve_benchmark_dir()
    with pytest.raises(GeoBenchFormatError, match="m-eurosat: task directory not found"):
        GeoBenchTask(tmp_path, "m-eurosat")
    assert parse_tasks("all") == list(TASKS)
    assert parse_tasks("m-cashew-plant,m-eurosat") == ["m-eurosat", "m-cashew-plant"]
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("m-cashew")
