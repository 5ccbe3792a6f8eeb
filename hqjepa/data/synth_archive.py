"""`hqjepa synth-bigearthnet OUT --pairs N --layout v1|v2`: a BigEarthNet archive of synthetic pairs.

Writes the exact folder layout, file names, JSON keys / metadata.parquet columns and GeoTIFF
conventions of the real archives (see `hqjepa.data.bigearthnet` for both layouts), one consistent
synthetic scene (`hqjepa.data.synthetic`) per pair:

- GeoTIFFs (rasterio, GTiff, one band per file, no nodata value set): S2 uint16 reflectance x 1e4
  at 10/20/60 m (120/60/20 px), S1 float32 dB at 10 m (120 px); WGS 84 / UTM (EPSG:326zz) with an
  affine transform over the same 1.2 km footprint for every band of a pair. A patch named
  `..._{h}_{v}` has its upper-left corner at (tile_x0 + 1200 h, tile_y0 - 1200 v), as the real
  patches have within their tile.
- v1: BigEarthNet-v1.0/ and BigEarthNet-S1-v1.0/ patch folders with `*_labels_metadata.json`
  (S2: labels, coordinates, projection, tile_source, acquisition_date; S1: labels, coordinates with
  the archive's "lly" typo, projection, corresponding_s2_patch, scene_source, acquisition_time),
  plus train.csv / val.csv / test.csv in the BigEarthNet-MM split format ("S2 name,S1 name").
- v2: BigEarthNet-S2/<tile>/<patch>/, BigEarthNet-S1/<scene>/<patch>/, Reference_Maps/<tile>/<patch>/
  (CLC level-3 codes, uint16) and metadata.parquet (zstd; patch_id, labels sorted by name, split in
  train/validation/test, country, s1_name, s2v1_name, contains_seasonal_snow,
  contains_cloud_or_shadow). Like reBEN, scenes without any 19-class label are not included.
  `flagged=k` sets the snow and/or cloud flag on k pairs (snow, cloud, both in turn); with
  `flagged_file=True` those rows go to metadata_for_patches_with_snow_cloud_or_shadow.parquet, as
  reBEN publishes them, instead of metadata.parquet.

Tile ids, dates and product names are plausible inventions (real tiles of the covered countries).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from hqjepa.bands import PATCH_FOOTPRINT_M, S1_BANDS, S2_BANDS, resolution_m
from hqjepa.data.bigearthnet import (
    S1_V1_DIR,
    S1_V2_DIR,
    S2_V1_DIR,
    S2_V2_DIR,
    V1_SPLIT_FILES,
    V2_FLAGGED_METADATA,
    V2_METADATA,
    V2_REFERENCE_MAPS,
    band_path,
    metadata_json_path,
    v2_s1_scene_folder,
    v2_tile_folder,
)
from hqjepa.data.labels import CLC_CODES43, LABELS19, LABELS43
from hqjepa.data.synthetic import render_batch


@dataclass(frozen=True)
class _Tile:
    tile: str  # MGRS tile, e.g. T33UUP
    country: str
    s2_time: str  # sensing start, YYYYMMDDThhmmss
    s2_sat: str
    orbit: str  # relative orbit, Rnnn
    s1_sat: str
    s1_time: str
    x0: int  # tile upper-left corner, UTM metres
    y0: int

    @property
    def epsg(self) -> int:
        return 32600 + int(self.tile[1:3])


_TILES = (
    _Tile("T33UUP", "Austria", "20170613T101031", "S2A", "R022", "S1A", "20170613T165043", 399960, 5400000),
    _Tile("T29UPU", "Ireland", "20170617T113321", "S2A", "R080", "S1B", "20170618T063948", 600000, 5900040),
    _Tile("T35VNK", "Finland", "20170924T093020", "S2B", "R136", "S1A", "20170925T043256", 499980, 6900000),
    _Tile("T29SND", "Portugal", "20171221T112501", "S2A", "R037", "S1B", "20171222T182315", 499980, 4400040),
    _Tile("T34TDP", "Serbia", "20180204T094161", "S2B", "R036", "S1A", "20180205T163012", 399960, 5000040),
)
_PATCHES_PER_TILE_SIDE = 90  # a 109.8 km tile holds 91 whole 1.2 km patches per side


def _iso(t: str, sep: str) -> str:
    return f"{t[0:4]}-{t[4:6]}-{t[6:8]}{sep}{t[9:11]}:{t[11:13]}:{t[13:15]}"


def _plus_seconds(t: str, seconds: int) -> str:
    return (datetime.strptime(t, "%Y%m%dT%H%M%S") + timedelta(seconds=seconds)).strftime("%Y%m%dT%H%M%S")


def _write_tif(path: Path, arr: np.ndarray, epsg: int, ulx: float, uly: float, res: float) -> None:
    import rasterio
    from affine import Affine

    transform = Affine(res, 0.0, ulx, 0.0, -res, uly)  # north-up, upper-left corner at (ulx, uly)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype.name,
        crs=f"EPSG:{epsg}",
        transform=transform,
    ) as ds:
        ds.write(arr, 1)


def _wkt(epsg: int) -> str:
    from rasterio.crs import CRS

    return CRS.from_epsg(epsg).to_wkt()


def write_archive(
    out: str | Path,
    pairs: int,
    layout: str = "v1",
    seed: int = 0,
    max_classes: int = 6,
    flagged: int = 0,
    flagged_file: bool = False,
) -> dict:
    """Write a synthetic archive of `pairs` S1/S2 pairs in the given layout; returns a summary dict."""
    if layout not in ("v1", "v2"):
        raise ValueError(f"layout {layout!r}: must be v1 or v2")
    if flagged and layout != "v2":
        raise ValueError("flagged pairs exist in the v2 layout only (v1.0 publishes lists of names instead)")
    if not 0 <= flagged <= pairs:
        raise ValueError(f"flagged = {flagged}: must be between 0 and the number of pairs")
    if pairs < 1:
        raise ValueError(f"pairs = {pairs}: must be at least 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # scenes; reBEN only keeps patches with at least one 19-class label, so redraw those without
    scenes = render_batch(rng, pairs, max_classes=max_classes)
    if layout == "v2":
        empty = np.flatnonzero(scenes.labels19.sum(1) == 0)
        while len(empty):
            extra = render_batch(rng, len(empty), max_classes=max_classes)
            for j, i in enumerate(empty):
                for d_src, d_dst in ((extra.s2, scenes.s2), (extra.s1, scenes.s1)):
                    for b in d_src:
                        d_dst[b][i] = d_src[b][j]
                scenes.landcover[i], scenes.labels43[i], scenes.labels19[i] = (
                    extra.landcover[j],
                    extra.labels43[j],
                    extra.labels19[j],
                )
            empty = np.flatnonzero(scenes.labels19.sum(1) == 0)

    tile_of_pair = rng.integers(0, len(_TILES), size=pairs)
    cells = rng.permutation(_PATCHES_PER_TILE_SIDE**2)
    split_of_pair = rng.choice(["train", "validation", "test"], size=pairs, p=[0.7, 0.15, 0.15])
    rows, split_lines = [], {s: [] for s in V1_SPLIT_FILES}
    for i in range(pairs):
        t = _TILES[tile_of_pair[i]]
        h, v = divmod(int(cells[i]), _PATCHES_PER_TILE_SIDE)
        ulx, uly = t.x0 + h * PATCH_FOOTPRINT_M, t.y0 - v * PATCH_FOOTPRINT_M
        s2v1 = f"{t.s2_sat}_MSIL2A_{t.s2_time}_{h}_{v}"
        s1 = f"{t.s1_sat}_IW_GRDH_1SDV_{t.s1_time}_{t.tile[1:]}_{h}_{v}"
        if layout == "v1":
            s2_name, s2_dir = s2v1, out / S2_V1_DIR / s2v1
            s1_dir = out / S1_V1_DIR / s1
        else:
            s2_name = f"{t.s2_sat}_MSIL2A_{t.s2_time}_N9999_{t.orbit}_{t.tile}_{h:02d}_{v:02d}"
            s2_dir = out / S2_V2_DIR / v2_tile_folder(s2_name) / s2_name
            s1_dir = out / S1_V2_DIR / v2_s1_scene_folder(s1) / s1
        s2_dir.mkdir(parents=True)
        s1_dir.mkdir(parents=True)
        for b in S2_BANDS:
            _write_tif(band_path(s2_dir, s2_name, b), scenes.s2[b][i], t.epsg, ulx, uly, resolution_m(b))
        for b in S1_BANDS:
            _write_tif(band_path(s1_dir, s1, b), scenes.s1[b][i], t.epsg, ulx, uly, resolution_m(b))
        names43 = [LABELS43[j] for j in np.flatnonzero(scenes.labels43[i])]
        if layout == "v1":
            wkt = _wkt(t.epsg)
            coords = {"ulx": ulx, "uly": uly, "lrx": ulx + PATCH_FOOTPRINT_M, "lry": uly - PATCH_FOOTPRINT_M}
            s2_meta = {
                "labels": names43,
                "coordinates": coords,
                "projection": wkt,
                "tile_source": f"{t.s2_sat}_MSIL1C_{t.s2_time}_N0205_{t.orbit}_{t.tile}_{t.s2_time}.SAFE",
                "acquisition_date": _iso(t.s2_time, " "),
            }
            s1_coords = {"ulx": ulx, "uly": uly, "lrx": ulx + PATCH_FOOTPRINT_M, "lly": uly - PATCH_FOOTPRINT_M}
            s1_meta = {
                "labels": names43,
                "coordinates": s1_coords,
                "projection": wkt,
                "corresponding_s2_patch": s2v1,
                "scene_source": f"{t.s1_sat}_IW_GRDH_1SDV_{t.s1_time}_{_plus_seconds(t.s1_time, 25)}"
                "_017018_01C579_7EEC",
                "acquisition_time": _iso(t.s1_time, "T"),
            }
            metadata_json_path(s2_dir, s2_name).write_text(json.dumps(s2_meta))
            metadata_json_path(s1_dir, s1).write_text(json.dumps(s1_meta))
            split_lines[str(split_of_pair[i])].append(f"{s2v1},{s1}")
        else:
            ref_dir = out / V2_REFERENCE_MAPS / v2_tile_folder(s2_name) / s2_name
            ref_dir.mkdir(parents=True)
            clc = np.asarray(CLC_CODES43, np.uint16)[scenes.landcover[i]]
            _write_tif(ref_dir / f"{s2_name}_reference_map.tif", clc, t.epsg, ulx, uly, 10)
            labels19 = sorted(LABELS19[j] for j in np.flatnonzero(scenes.labels19[i]))
            rows.append(
                {
                    "patch_id": s2_name,
                    "labels": labels19,
                    "split": str(split_of_pair[i]),
                    "country": t.country,
                    "s1_name": s1,
                    "s2v1_name": s2v1,
                    "contains_seasonal_snow": i < flagged and i % 3 in (0, 2),
                    "contains_cloud_or_shadow": i < flagged and i % 3 in (1, 2),
                }
            )

    if layout == "v1":
        for split, name in V1_SPLIT_FILES.items():
            (out / name).write_text("".join(line + "\n" for line in split_lines[split]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows.sort(key=lambda r: r["patch_id"])
        schema = pa.schema(
            [
                ("patch_id", pa.string()),
                ("labels", pa.list_(pa.string())),
                ("split", pa.string()),
                ("country", pa.string()),
                ("s1_name", pa.string()),
                ("s2v1_name", pa.string()),
                ("contains_seasonal_snow", pa.bool_()),
                ("contains_cloud_or_shadow", pa.bool_()),
            ]
        )
        is_flagged = [r["contains_seasonal_snow"] or r["contains_cloud_or_shadow"] for r in rows]
        clean = [r for r, f in zip(rows, is_flagged, strict=True) if not (f and flagged_file)]
        pq.write_table(pa.Table.from_pylist(clean, schema=schema), out / V2_METADATA, compression="zstd")
        if flagged_file:
            dirty = [r for r, f in zip(rows, is_flagged, strict=True) if f]
            pq.write_table(pa.Table.from_pylist(dirty, schema=schema), out / V2_FLAGGED_METADATA, compression="zstd")
    return {"out": str(out), "layout": layout, "pairs": pairs, "seed": seed, "flagged": flagged}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hqjepa synth-bigearthnet`: output directory, pair count, layout, seed, classes per scene."""
    parser.add_argument("out", help="output directory (created; must be empty)")
    parser.add_argument("--pairs", type=int, required=True, help="number of S1/S2 pairs")
    parser.add_argument(
        "--layout",
        choices=("v1", "v2"),
        required=True,
        help="v1: BigEarthNet-S1 v1.0 + BigEarthNet-S2 v1.0; v2: BigEarthNet v2.0 (reBEN)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-classes", type=int, default=6, help="land-cover classes per scene, at most")
    parser.add_argument(
        "--flagged", type=int, default=0, help="v2: pairs flagged for seasonal snow and/or cloud or shadow"
    )
    parser.add_argument(
        "--flagged-file",
        action="store_true",
        help="v2: flagged rows in metadata_for_patches_with_snow_cloud_or_shadow.parquet, as reBEN ships them",
    )


def main(args: argparse.Namespace) -> int:
    """Write a synthetic archive as `configure_parser` describes; exit status 0, or 2 with the error on stderr."""
    try:
        summary = write_archive(
            args.out, args.pairs, args.layout, args.seed, args.max_classes, args.flagged, args.flagged_file
        )
    except (ValueError, FileExistsError) as e:
        print(f"hqjepa synth-bigearthnet: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['pairs']} {summary['layout']} pairs to {summary['out']}")
    return 0
