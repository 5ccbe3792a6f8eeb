"""`hqjepa synth-geobench OUT`: the six GeoBench tasks in GeoBench's format, from synthetic scenes.

Same directories, band names and band-info classes, label types, image sizes, dtypes and splits as
GeoBench v1.0 (see `geobench` and `band_map` for the facts), written by `geobench_writer` exactly
as geobench writes them. Scenes come from `hqjepa.data.synthetic.render_batch` (a land-cover map in
the 43-class CORINE nomenclature, S2 reflectance at native grids, S1 backscatter in dB); every band
is brought to the task's 10 m grid with the project's resampling, as GeoBench's converters did.

Labels are functions of the scene's land cover, so they are learnable from S2:
- m-bigearthnet: the scene's 43-class multi-label vector (class covers > 1 % of the scene).
- m-eurosat: the EuroSAT class (10) with the largest area, land cover grouped into EuroSAT's classes.
- m-so2sat: a local-climate-zone class (17) from the land-cover mix: built-up share and its kind
  (continuous / discontinuous urban, industrial, construction) give LCZ 1-10, otherwise the
  dominant natural cover gives LCZ A-G (see `_lcz`).
- m-brick-kiln: 1 when "Mineral extraction sites" (kiln pits and clay) covers > 1 % of the scene.
- m-SA-crop-type / m-cashew-plant: the land-cover map mapped pixel-wise to the task's classes
  (non-crop / unlabelled cover -> class 0 "No Data" / "no data" like GeoBench's masks).
Bands the generator does not model are drawn plainly: B10 (cirrus) as dark noise, the cloud
probability as 0-10 %, so2sat's 8 S1 components from the dB backscatter (complex amplitudes with
random phase; Lee-filtered intensities and VV-VH covariance over 3 x 3 windows).
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hqjepa.data.labels import LABELS43, label_index
from hqjepa.data.synthetic import SceneBatch, render_batch
from hqjepa.data.transforms import resample_to
from hqjepa.eval.band_map import s2_band_of
from hqjepa.eval.geobench import TASKS
from hqjepa.eval.geobench_writer import (
    BandArray,
    StatsAccumulator,
    write_band_stats,
    write_partition,
    write_sample,
    write_task_specs,
)
from hqjepa.eval.safe_pickle import (
    Classification,
    CloudProbability,
    MultiLabelClassification,
    SegmentationClasses,
    Sentinel1,
    Sentinel2,
    TaskSpecifications,
)

# geobench.dataset.sentinel2_13_bands / sentinel1_8_bands, as geobench defines them
SENTINEL2_13 = [
    Sentinel2("01 - Coastal aerosol", ("1", "01"), 60, 0.443),
    Sentinel2("02 - Blue", ("2", "02", "blue"), 10, 0.49),
    Sentinel2("03 - Green", ("3", "03", "green"), 10, 0.56),
    Sentinel2("04 - Red", ("4", "04", "red"), 10, 0.665),
    Sentinel2("05 - Vegetation Red Edge", ("5", "05"), 20, 0.705),
    Sentinel2("06 - Vegetation Red Edge", ("6", "06"), 20, 0.74),
    Sentinel2("07 - Vegetation Red Edge", ("7", "07"), 20, 0.783),
    Sentinel2("08 - NIR", ("8", "08", "NIR"), 10, 0.842),
    Sentinel2("08A - Vegetation Red Edge", ("8A", "08A"), 20, 0.865),
    Sentinel2("09 - Water vapour", ("9", "09"), 60, 0.945),
    Sentinel2("10 - SWIR - Cirrus", ("10",), 60, 1.375),
    Sentinel2("11 - SWIR", ("11",), 20, 1.61),
    Sentinel2("12 - SWIR", ("12",), 20, 2.19),
]
SENTINEL1_8 = [
    Sentinel1(n, (), 10, None)
    for n in (
        "01 - VH.Real",
        "02 - VH.Imaginary",
        "03 - VV.Real",
        "04 - VV.Imaginary",
        "05 - VH.LEE Filtered",
        "06 - VV.LEE Filtered",
        "07 - VH.LEE Filtered.Real",
        "08 - VV.LEE Filtered.Imaginary",
    )
]

CLASS_NAMES = {
    "m-eurosat": [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ],
    "m-so2sat": [
        "Compact high rise",
        "Compact mid rise",
        "Compact low rise",
        "Open high rise",
        "Open mid rise",
        "Open low rise",
        "Lightweight low rise",
        "Large low rise",
        "Sparsely built",
        "Heavy industry",
        "Dense trees",
        "Scattered trees",
        "Bush, scrub",
        "Low plants",
        "Bare rock or paved",
        "Bare soil or sand",
        "Water",
    ],
    "m-brick-kiln": ["not brick kiln", "brick kiln"],
    "m-SA-crop-type": [
        "No Data",
        "Lucerne/Medics",
        "Planted pastures (perennial)",
        "Fallow",
        "Wine grapes",
        "Weeds",
        "Small grain grazing",
        "Wheat",
        "Canola",
        "Rooibos",
    ],
    "m-cashew-plant": [
        "no data",
        "well-managed plantation",
        "poorly-managed plantation",
        "non-plantation",
        "residential",
        "background",
        "uncertain",
    ],
}


def _ix(*names: str) -> list[int]:
    return [label_index(n, 43) for n in names]


# 43-class land cover -> task class (indices into CLASS_NAMES[task]); unlisted cover -> 0 for masks
EUROSAT_OF = {
    0: _ix(
        "Non-irrigated arable land",
        "Permanently irrigated land",
        "Rice fields",
        "Annual crops associated with permanent crops",
        "Complex cultivation patterns",
    ),
    1: _ix("Broad-leaved forest", "Coniferous forest", "Mixed forest"),
    2: _ix("Natural grassland", "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub"),
    3: _ix("Road and rail networks and associated land"),
    4: _ix("Industrial or commercial units", "Port areas", "Airports"),
    5: _ix("Pastures"),
    6: _ix("Vineyards", "Fruit trees and berry plantations", "Olive groves", "Agro-forestry areas"),
    7: _ix("Continuous urban fabric", "Discontinuous urban fabric"),
    8: _ix("Water courses"),
    9: _ix("Water bodies", "Sea and ocean"),
}
SA_CROP_OF = {
    1: _ix("Permanently irrigated land"),
    2: _ix("Pastures"),
    3: _ix("Complex cultivation patterns"),
    4: _ix("Vineyards"),
    5: _ix("Natural grassland"),
    6: _ix("Annual crops associated with permanent crops"),
    7: _ix("Non-irrigated arable land"),
    8: _ix("Rice fields"),
    9: _ix("Land principally occupied by agriculture, with significant areas of natural vegetation"),
}
SA_CROP_EXTRA = _ix("Broad-leaved forest", "Discontinuous urban fabric", "Water bodies")  # -> "No Data"
CASHEW_OF = {
    1: _ix("Fruit trees and berry plantations"),
    2: _ix("Agro-forestry areas"),
    3: _ix("Non-irrigated arable land", "Pastures", "Complex cultivation patterns"),
    4: _ix("Discontinuous urban fabric"),
    5: _ix("Broad-leaved forest", "Transitional woodland/shrub"),
    6: _ix("Olive groves"),
}
CASHEW_EXTRA = _ix("Water bodies")  # -> "no data"
KILN = label_index("Mineral extraction sites", 43)
KILN_RURAL = _ix(
    "Non-irrigated arable land",
    "Pastures",
    "Complex cultivation patterns",
    "Natural grassland",
    "Water courses",
    "Discontinuous urban fabric",
)
SPLIT_SHARES = (("train", 0.5), ("valid", 0.25), ("test", 0.25))
CASHEW_DATES = [datetime.date(2019, 11, 5) + datetime.timedelta(days=5 * k) for k in range(25)]


def _lookup(mapping: dict[int, list[int]]) -> np.ndarray:
    table = np.zeros(len(LABELS43), np.int64)
    for cls, ids in mapping.items():
        table[ids] = cls
    return table


def _lcz(fr: np.ndarray) -> int:
    """Local-climate-zone class (index into CLASS_NAMES["m-so2sat"]) of one scene's 43-class fractions."""

    def s(*names: str) -> float:
        return float(fr[_ix(*names)].sum())

    compact, open_ = s("Continuous urban fabric"), s("Discontinuous urban fabric")
    industry = s("Industrial or commercial units", "Port areas", "Airports")
    works = s("Mineral extraction sites", "Dump sites", "Construction sites")
    roads = s("Road and rail networks and associated land")
    green = s("Green urban areas", "Sport and leisure facilities")
    built = compact + open_ + industry + works + roads
    if built >= 0.25:
        kind = int(np.argmax([compact, open_, industry, works, roads]))
        height = 0 if built > 0.75 else 1 if built > 0.5 else 2  # high / mid / low rise
        if kind == 0:
            return height  # compact high/mid/low
        if kind == 1:
            return 3 + height  # open high/mid/low
        if kind == 2:
            return 9 if industry > 0.5 else 7  # heavy industry / large low rise
        if kind == 3:
            return 6  # lightweight low rise
        return 14  # paved
    if built + green >= 0.1:
        return 8  # sparsely built
    natural = [
        s("Broad-leaved forest", "Coniferous forest", "Mixed forest"),  # dense trees
        s("Fruit trees and berry plantations", "Olive groves", "Agro-forestry areas", "Vineyards"),  # scattered
        s("Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub"),  # bush, scrub
        s(
            "Non-irrigated arable land",
            "Permanently irrigated land",
            "Rice fields",
            "Pastures",
            "Annual crops associated with permanent crops",
            "Complex cultivation patterns",
            "Land principally occupied by agriculture, with significant areas of natural vegetation",
            "Natural grassland",
        ),  # low plants
        s("Bare rock"),  # rock/paved
        s("Beaches, dunes, sands", "Sparsely vegetated areas", "Burnt areas"),  # soil/sand
        s(
            "Inland marshes",
            "Peatbogs",
            "Salt marshes",
            "Salines",
            "Intertidal flats",
            "Water courses",
            "Water bodies",
            "Coastal lagoons",
            "Estuaries",
            "Sea and ocean",
        ),  # water
    ]
    return 10 + int(np.argmax(natural))


# --- rendering per task --------------------------------------------------------------------------


def _mixed(rng: np.random.Generator, n: int, size: int, parts: Sequence[dict]) -> tuple[SceneBatch, np.ndarray]:
    """Render n scenes split evenly over several render_batch settings, in a shuffled order.

    Returns the batches concatenated (as a list of scenes by index) and the permutation used.
    """
    counts = [n // len(parts) + (1 if i < n % len(parts) else 0) for i in range(len(parts))]
    batches = [render_batch(rng, c, size, **p) for c, p in zip(counts, parts, strict=True) if c > 0]
    land = np.concatenate([b.landcover for b in batches])
    s2 = {k: np.concatenate([b.s2[k] for b in batches]) for k in batches[0].s2}
    s1 = {k: np.concatenate([b.s1[k] for b in batches]) for k in batches[0].s1}
    fr = np.concatenate([b.fractions for b in batches])
    l43 = np.concatenate([b.labels43 for b in batches])
    l19 = np.concatenate([b.labels19 for b in batches])
    order = rng.permutation(n)
    return SceneBatch(
        land[order],
        {k: v[order] for k, v in s2.items()},
        {k: v[order] for k, v in s1.items()},
        l43[order],
        l19[order],
        fr[order],
    ), order


def _scenes(task: str, rng: np.random.Generator, n: int, size: int) -> SceneBatch:
    if task == "m-bigearthnet":
        return render_batch(rng, n, size, max_classes=6)
    if task == "m-eurosat":
        pool = sorted(i for ids in EUROSAT_OF.values() for i in ids)
        return render_batch(rng, n, size, max_classes=3, classes=pool)
    if task == "m-so2sat":
        urban = list(range(11))  # the 11 artificial-surface classes
        return _mixed(
            rng,
            n,
            size,
            [dict(max_classes=4, classes=urban + _ix("Pastures", "Broad-leaved forest")), dict(max_classes=4)],
        )[0]
    if task == "m-brick-kiln":
        return _mixed(
            rng,
            n,
            size,
            [
                dict(max_classes=3, classes=KILN_RURAL),
                dict(max_classes=3, min_classes=3, classes=[KILN] + KILN_RURAL[:2]),
            ],
        )[0]
    if task == "m-SA-crop-type":
        pool = sorted({i for ids in SA_CROP_OF.values() for i in ids} | set(SA_CROP_EXTRA))
        return render_batch(rng, n, size, max_classes=6, min_classes=3, classes=pool)
    if task == "m-cashew-plant":
        pool = sorted({i for ids in CASHEW_OF.values() for i in ids} | set(CASHEW_EXTRA))
        return render_batch(rng, n, size, max_classes=6, min_classes=3, classes=pool)
    raise ValueError(f"unknown task {task!r}")


def _labels(task: str, batch: SceneBatch) -> list[Any]:
    n = len(batch)
    if task == "m-bigearthnet":
        return [batch.labels43[i].astype(np.int64) for i in range(n)]
    if task == "m-eurosat":
        agg = np.stack([batch.fractions[:, ids].sum(axis=1) for _, ids in sorted(EUROSAT_OF.items())], axis=1)
        return [int(c) for c in agg.argmax(axis=1)]
    if task == "m-so2sat":
        return [_lcz(batch.fractions[i]) for i in range(n)]
    if task == "m-brick-kiln":
        return [int(batch.fractions[i, KILN] > 0.01) for i in range(n)]
    table = _lookup(SA_CROP_OF if task == "m-SA-crop-type" else CASHEW_OF)
    return [table[batch.landcover[i]].astype(np.int16) for i in range(n)]


def _s1_components(vv_db: np.ndarray, vh_db: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """So2Sat's 8 S1 channels from dB backscatter: Re/Im of VH and VV (amplitude sqrt(10^(dB/10)),
    uniform random phase), Lee-filtered VH and VV intensity, Re/Im of the filtered VH-VV covariance."""

    def complex_of(db: np.ndarray) -> np.ndarray:
        amp = np.sqrt(np.power(10.0, db / 10.0))
        return amp * np.exp(1j * rng.uniform(0, 2 * np.pi, size=db.shape))

    def box(a: np.ndarray) -> np.ndarray:  # 3 x 3 local mean, edges replicated
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None, None]
        return F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0].numpy()

    def lee(intensity: np.ndarray, looks: float = 4.4) -> np.ndarray:
        mean, sq = box(intensity), box(intensity**2)
        var = np.maximum(sq - mean**2, 0.0)
        noise = mean**2 / looks
        weight = np.clip((var - noise) / np.maximum(var, 1e-12), 0.0, 1.0)
        return mean + weight * (intensity - mean)

    vh, vv = complex_of(vh_db), complex_of(vv_db)
    cov = vh * np.conj(vv)
    return [
        vh.real,
        vh.imag,
        vv.real,
        vv.imag,
        lee(np.abs(vh) ** 2),
        lee(np.abs(vv) ** 2),
        box(cov.real),
        box(cov.imag),
    ]


def _bands(task: str, batch: SceneBatch, i: int, size: int, rng: np.random.Generator) -> list[BandArray]:
    """The sample's bands in the task's GeoBench order, at its 10 m grid, with its dtype."""
    s2 = resample_to({b: a[i] for b, a in batch.s2.items()}, size)  # 20/60 m bands upsampled bilinearly
    spec = TASK_LAYOUT[task]
    out = []
    s1 = None
    for info in spec["bands_info"]:
        if isinstance(info, Sentinel1):
            if s1 is None:
                s1 = dict(
                    zip(
                        [b.name for b in SENTINEL1_8],
                        _s1_components(batch.s1["VV"][i], batch.s1["VH"][i], rng),
                        strict=True,
                    )
                )
            data = s1[info.name]
        elif isinstance(info, CloudProbability):
            data = rng.integers(0, 11, size=(size, size)).astype(np.float64)
        else:
            band = s2_band_of(info)
            data = s2[band] if band in s2 else np.clip(rng.normal(15.0, 3.0, size=(size, size)), 1, None)
        out.append(
            BandArray(
                np.asarray(data).astype(spec["dtype"]),
                info,
                spec["resolution"],
                date=spec["date"](i) if spec["date"] else None,
            )
        )
    return out


def _no_cirrus_plus_cloud(alt_names: tuple, resolution: float | None) -> list:
    bands = [b for b in SENTINEL2_13 if b.name != "10 - SWIR - Cirrus"]
    return bands + [CloudProbability(alt_names, resolution)]


TASK_LAYOUT: dict[str, dict[str, Any]] = {
    # per geobench's converters: band list, dtype of stored pixels, Band.spatial_resolution, dates
    "m-bigearthnet": dict(
        bands_info=SENTINEL2_13[0:10] + SENTINEL2_13[-2:],
        dtype=np.float32,
        resolution=10,
        date=None,
        label=lambda: MultiLabelClassification(43, list(LABELS43)),
    ),
    "m-eurosat": dict(
        bands_info=SENTINEL2_13,
        dtype=np.int16,
        resolution=10,
        date=None,
        label=lambda: Classification(10, CLASS_NAMES["m-eurosat"]),
    ),
    "m-so2sat": dict(
        bands_info=SENTINEL1_8 + SENTINEL2_13[1:9] + SENTINEL2_13[-2:],
        dtype=np.float32,
        resolution=10,
        date=None,
        label=lambda: Classification(17, CLASS_NAMES["m-so2sat"]),
    ),
    "m-brick-kiln": dict(
        bands_info=SENTINEL2_13,
        dtype=np.float32,
        resolution=10,
        date=None,
        label=lambda: Classification(2, CLASS_NAMES["m-brick-kiln"]),
    ),
    "m-SA-crop-type": dict(
        bands_info=_no_cirrus_plus_cloud(("CPL", "CLM"), None),
        dtype=np.int16,
        resolution=10,
        date=None,
        label=lambda: SegmentationClasses("label", 10, 10, CLASS_NAMES["m-SA-crop-type"]),
    ),
    # geobench's cashew converter records 0.5 m (its own "to be confirmed"); kept for fidelity
    "m-cashew-plant": dict(
        bands_info=_no_cirrus_plus_cloud(("CPL", "CLD"), 10),
        dtype=np.float32,
        resolution=0.5,
        date=lambda i: CASHEW_DATES[i % len(CASHEW_DATES)],
        label=lambda: SegmentationClasses("label", 0.5, 7, CLASS_NAMES["m-cashew-plant"]),
    ),
}


def split_names(n: int) -> dict[str, list[str]]:
    """Sample names id_0000.. split 50/25/25 into train/valid/test, at least one sample each."""
    if n < 3:
        raise ValueError(f"need at least 3 samples per task (one per split), got {n}")
    n_valid = max(1, int(round(n * 0.25)))
    n_test = max(1, int(round(n * 0.25)))
    n_train = n - n_valid - n_test
    names = [f"id_{i:04d}" for i in range(n)]
    return {"train": names[:n_train], "valid": names[n_train : n_train + n_valid], "test": names[n_train + n_valid :]}


def write_task(out: str | Path, task: str, n: int, seed: int = 0, size: int | None = None) -> Path:
    """Write one task directory under OUT/<benchmark>/<task>; returns its path."""
    info = TASKS[task]
    size = info.size_px if size is None else size
    layout = TASK_LAYOUT[task]
    rng = np.random.default_rng([seed, list(TASKS).index(task)])
    task_dir = Path(out) / info.benchmark / task
    task_dir.mkdir(parents=True, exist_ok=True)
    label_type = layout["label"]()
    specs = TaskSpecifications(
        dataset_name=task,
        bands_info=list(layout["bands_info"]),
        spatial_resolution=layout["resolution"],
        benchmark_name=info.benchmark,
        patch_size=(size, size),
        n_time_steps=1,
        label_type=label_type,
    )
    write_task_specs(task_dir, specs)
    splits = split_names(n)
    write_partition(task_dir, "default", splits)
    batch = _scenes(task, rng, n, size)
    labels = _labels(task, batch)
    train = set(splits["train"])
    acc = StatsAccumulator(np.random.default_rng([seed, 99]))
    for i in range(n):
        name = f"id_{i:04d}"
        bands = _bands(task, batch, i, size, rng)
        label: Any = labels[i]
        if isinstance(label_type, SegmentationClasses):
            label = BandArray(label, label_type, layout["resolution"])
        write_sample(task_dir, name, bands, label)
        if name in train:  # band_stats.json describes the train split, as geobench's script does
            for b in bands:
                acc.add(b.band_info.name, b.data)
            acc.add("label", label.data if isinstance(label, BandArray) else label)
    write_band_stats(task_dir, acc.stats())
    return task_dir


def write_benchmark(
    out: str | Path,
    samples: int = 40,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Write every task (default: all six); returns task -> directory."""
    written = {}
    for task in tasks or list(TASKS):
        written[task] = str(write_task(out, task, samples, seed))
        if progress:
            progress(task)
    return written


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hqjepa synth-geobench`: output directory, samples per task, seed, tasks."""
    parser.add_argument("out", help="directory to write classification_v1.0/ and segmentation_v1.0/ into")
    parser.add_argument("--samples", type=int, default=40, help="samples per task, split 50/25/25 (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="all", help="comma list of task names, or all")


def main(args: argparse.Namespace) -> int:
    """Write the synthetic benchmark, printing one JSON line per task written and a summary line; returns 0."""
    from hqjepa.eval.geobench import parse_tasks

    written = write_benchmark(
        args.out,
        args.samples,
        args.seed,
        parse_tasks(args.tasks),
        progress=lambda t: print(json.dumps({"task": t, "written": True}), flush=True),
    )
    print(json.dumps({"out": str(args.out), "tasks": list(written), "samples_per_task": args.samples}))
    return 0
