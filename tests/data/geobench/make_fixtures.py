"""Write tiny GeoBench v1.0 task directories with the `geobench` package's OWN writers.

The project cannot depend on `geobench` (it pins pandas<2, which fails beside numpy 2), so the
project's reader is held to files that geobench itself wrote. This script is run ONCE, in an
isolated venv, and its output is committed next to it:

    python3 -m venv /tmp/gbvenv
    /tmp/gbvenv/bin/pip install 'numpy<2' 'pandas<2' geobench
    GEO_BENCH_DIR=/tmp/gb-home /tmp/gbvenv/bin/python tests/data/geobench/make_fixtures.py

Versions used for the committed fixtures (recorded again in `expected.json`):
    geobench 1.0.0, numpy 1.26.4, pandas 1.5.3, h5py 3.16.0, rasterio 1.4.4, affine 3.0.1,
    Python 3.11.7.

What is written, per task, with geobench's API only:
- one HDF5 per sample via `Sample.write(dir)` (= `write_sample_hdf5`): one h5py dataset per band
  descriptor (band name, plus `_YYYY-MM-DD` when the band carries a date), and the root attribute
  `pickle` = `str(pickle.dumps({descriptor: attrs, "bands_order": [...], "label": ...}))`;
- `task_specs.pkl` via `TaskSpecifications.save`;
- `default_partition.json` and `0.50x_train_partition.json` via `Partition.save`;
- `band_stats.json` exactly as geobench's `bandstats.produce_band_stats` writes it
  (`compute_dataset_statistics` then `json.dump({k: v.to_dict()}, indent=4, sort_keys=True)`);
  that module is not shipped in the 1.0.0 wheel, so its three lines are repeated here.

Band lists, label types, dtypes, transforms and dates follow geobench's dataset converters
(geobench/benchmark/dataset_converters/{bigearthnet,eurosat,so2sat,brick_kiln,
crop_type_south_africa,benin_smallholder_cashews}.py). Real image sizes are kept where the files stay
small (m-eurosat 64 px, m-so2sat 32 px); the others are shrunk to keep the fixtures to ~2 MB
(real: m-bigearthnet 120 px, m-brick-kiln 64 px, segmentation 256 px). `task_specs.patch_size`
states the size actually written, so geobench's own `check_dataset_integrity` passes.

Pixel values encode the band: band k (0-based position in the task's band list) holds
`1000 * (k + 1) + noise`, so a reader that orders bands alphabetically (as h5py lists them)
instead of by the pickled `bands_order` is caught. `expected.json` records, for every sample, what
geobench's own `load_sample` + `pack_to_3d` return (band names in order, per-band means, shape,
label), so the project's tests compare against geobench's reading, not against this script.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("GEO_BENCH_DIR", "/tmp/gb-home")  # geobench mkdirs this at import
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", message="No geotransformation")  # converters write transform=None too

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas  # noqa: E402
import rasterio  # noqa: E402
import rasterio.transform  # noqa: E402
from rasterio.crs import CRS  # noqa: E402

import geobench as gb  # noqa: E402
from geobench.dataset import (  # noqa: E402
    GeobenchDataset, check_dataset_integrity, compute_dataset_statistics, load_sample,
)

HERE = Path(__file__).resolve().parent

BIGEARTHNET_43 = [  # torchgeo BigEarthNet.class_sets[43], the order geobench's converter used
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock", "Sparsely vegetated areas",
    "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes", "Salines", "Intertidal flats",
    "Water courses", "Water bodies", "Coastal lagoons", "Estuaries", "Sea and ocean",
]
EUROSAT_10 = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
              "PermanentCrop", "Residential", "River", "SeaLake"]
SO2SAT_17 = ["Compact high rise", "Compact mid rise", "Compact low rise", "Open high rise",
             "Open mid rise", "Open low rise", "Lightweight low rise", "Large low rise",
             "Sparsely built", "Heavy industry", "Dense trees", "Scattered trees", "Bush, scrub",
             "Low plants", "Bare rock or paved", "Bare soil or sand", "Water"]
SA_CROP_10 = ["No Data", "Lucerne/Medics", "Planted pastures (perennial)", "Fallow", "Wine grapes",
              "Weeds", "Small grain grazing", "Wheat", "Canola", "Rooibos"]
CASHEW_7 = ["no data", "well-managed plantation", "poorly-managed plantation", "non-plantation",
            "residential", "background", "uncertain"]

S2_13 = gb.sentinel2_13_bands


def _s2_no_cirrus_plus_cloud(alt_names, resolution):
    bands = S2_13[:]
    dropped = bands.pop(10)
    assert dropped.name == "10 - SWIR - Cirrus"
    bands.append(gb.CloudProbability(alt_names=alt_names, spatial_resolution=resolution))
    return bands


def _tasks():
    """(benchmark, task, bands_info, label_type, size, dtype, n_samples, per-band kwargs)."""
    sa_label = gb.SegmentationClasses("label", spatial_resolution=10, n_classes=len(SA_CROP_10),
                                      class_names=SA_CROP_10)
    cashew_label = gb.SegmentationClasses("label", spatial_resolution=0.5, n_classes=len(CASHEW_7),
                                          class_names=CASHEW_7)
    return [
        dict(benchmark="classification_v1.0", task="m-bigearthnet",
             bands_info=S2_13[0:10] + S2_13[-2:], resolution=10,
             label_type=gb.MultiLabelClassification(43, class_names=BIGEARTHNET_43),
             size=40, dtype=np.float32, transform=None, crs=None, date=None),
        dict(benchmark="classification_v1.0", task="m-eurosat",
             bands_info=S2_13, resolution=10,
             label_type=gb.Classification(10, class_names=EUROSAT_10),
             size=64, dtype=np.int16, transform=None, crs=None, date=None),
        dict(benchmark="classification_v1.0", task="m-so2sat",
             bands_info=gb.sentinel1_8_bands + S2_13[1:9] + S2_13[-2:], resolution=10,
             label_type=gb.Classification(17, class_names=SO2SAT_17),
             size=32, dtype=np.float32, transform=None, crs=None, date=None),
        dict(benchmark="classification_v1.0", task="m-brick-kiln",
             bands_info=S2_13, resolution=10,
             label_type=gb.Classification(2, ["not brick kiln", "brick kiln"]),
             size=32, dtype=np.float32,
             transform=rasterio.transform.from_bounds(west=90.1, south=23.9, east=90.106,
                                                      north=23.906, width=32, height=32),
             crs="EPSG:4326", date=None),
        dict(benchmark="segmentation_v1.0", task="m-SA-crop-type",
             bands_info=_s2_no_cirrus_plus_cloud(("CPL", "CLM"), None), resolution=10,
             label_type=sa_label, size=32, dtype=np.int16,
             transform=rasterio.Affine(10.0, 0.0, 331040.0, 0.0, -10.0, -3714560.0),
             crs=CRS.from_epsg(32634), date=None),
        dict(benchmark="segmentation_v1.0", task="m-cashew-plant",
             bands_info=_s2_no_cirrus_plus_cloud(("CPL", "CLD"), 10), resolution=0.5,
             label_type=cashew_label, size=32, dtype=np.float32, transform=None, crs=None,
             date=datetime.date(2019, 11, 10)),
    ]


SPLITS = ["train", "train", "train", "valid", "test"]  # five samples per task


def _band_data(rng, k, size, dtype, info):
    base = 1000.0 * (k + 1)
    noise = rng.integers(0, 200, size=(size, size)).astype(np.float64)
    if isinstance(info, gb.Sentinel1):  # so2sat's S1 components are small real/imag floats
        return ((k + 1) * 0.01 + noise * 1e-4).astype(dtype)
    if isinstance(info, gb.CloudProbability):
        return rng.integers(0, 100, size=(size, size)).astype(dtype)
    return (base + noise).astype(dtype)


def _label(rng, spec, size):
    lt = spec["label_type"]
    if isinstance(lt, gb.SegmentationClasses):
        data = rng.integers(0, lt.n_classes, size=(size, size)).astype(np.int16)
        return gb.Band(data=data, band_info=lt, spatial_resolution=spec["resolution"],
                       transform=spec["transform"], crs=spec["crs"])
    if isinstance(lt, gb.MultiLabelClassification):
        vec = np.zeros(lt.n_classes, dtype=np.int64)  # torchgeo's label tensor -> np.array
        vec[rng.choice(lt.n_classes, size=3, replace=False)] = 1
        return vec
    return int(rng.integers(0, lt.n_classes))


def write_task(spec, root: Path, rng) -> dict:
    task_dir = root / spec["benchmark"] / spec["task"]
    task_dir.mkdir(parents=True)
    size = spec["size"]
    task_specs = gb.TaskSpecifications(
        dataset_name=spec["task"], benchmark_name=spec["benchmark"], patch_size=(size, size),
        n_time_steps=1, bands_info=spec["bands_info"], label_type=spec["label_type"],
        spatial_resolution=spec["resolution"])
    task_specs.save(str(task_dir), overwrite=True)

    default, half = gb.Partition(), gb.Partition()
    for i, split in enumerate(SPLITS):
        name = f"id_{i:04d}"
        bands = [gb.Band(data=_band_data(rng, k, size, spec["dtype"], info), band_info=info,
                         spatial_resolution=spec["resolution"], date=spec["date"],
                         transform=spec["transform"], crs=spec["crs"], convert_to_int16=False)
                 for k, info in enumerate(spec["bands_info"])]
        gb.Sample(bands, label=_label(rng, spec, size), sample_name=name).write(str(task_dir))
        default.add(split, name)
        if split != "train" or i % 2 == 0:
            half.add(split, name)
    default.save(str(task_dir), "default")
    half.save(str(task_dir), "0.50x_train")

    # geobench/bandstats.py::produce_band_stats, verbatim in effect
    dataset = GeobenchDataset(task_dir, partition_name="default", split="train")
    _values, band_stats = compute_dataset_statistics(dataset, n_value_per_image=1000, n_samples=1000)
    with open(task_dir / "band_stats.json", "w", encoding="utf8") as fp:
        json.dump({k: v.to_dict() for k, v in band_stats.items()}, fp, indent=4, sort_keys=True)

    # geobench's own integrity check and reading, recorded for the project's tests
    full = GeobenchDataset(task_dir, partition_name="default")
    check_dataset_integrity(full, samples=None)
    band_names = [b.name for b in task_specs.bands_info]
    samples = {}
    for path in sorted(task_dir.glob("*.hdf5")):
        sample = load_sample(path, format="hdf5")
        array, names = sample.pack_to_3d(band_names=band_names)
        label = sample.label
        if isinstance(label, gb.Band):
            label_out = {"shape": list(label.data.shape),
                         "counts": np.bincount(label.data.ravel(), minlength=label.band_info.n_classes).tolist()}
        elif isinstance(label, np.ndarray):
            label_out = label.tolist()
        else:
            label_out = int(label)
        with h5py.File(path, "r") as f:
            h5_keys = list(f.keys())
        samples[path.stem] = {
            "band_names": list(names), "shape": list(array.shape),
            "band_means": [float(array[..., j].mean()) for j in range(array.shape[-1])],
            "dtype": str(array.dtype), "label": label_out, "h5py_keys": h5_keys,
            "bands_order": [b.get_descriptor() for b in sample.bands],
        }
    return {
        "dir": f"{spec['benchmark']}/{spec['task']}",
        "label_type": type(spec["label_type"]).__name__,
        "n_classes": spec["label_type"].n_classes,
        "band_names": band_names,
        "patch_size": [size, size],
        "partitions": {"default": default.partition_dict, "0.50x_train": half.partition_dict},
        "samples": samples,
    }


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    rng = np.random.default_rng(20240607)
    np.random.seed(0)  # geobench's compute_dataset_statistics samples with the global numpy RNG
    for bench in ("classification_v1.0", "segmentation_v1.0"):
        shutil.rmtree(out / bench, ignore_errors=True)
    expected = {
        # the wheel's own geobench.__version__ says "0.0.3"; the distribution metadata is the truth
        "versions": {"geobench": version("geobench"), "numpy": np.__version__,
                     "pandas": pandas.__version__, "h5py": h5py.__version__,
                     "rasterio": rasterio.__version__, "python": sys.version.split()[0]},
        "tasks": {},
    }
    for spec in _tasks():
        expected["tasks"][spec["task"]] = write_task(spec, out, rng)
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(json.dumps(expected["versions"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
