"""Readers for the two BigEarthNet S1/S2 archive layouts on disk.

v1.0 (BigEarthNet-MM: BigEarthNet-S2 v1.0 + BigEarthNet-S1 v1.0), extracted side by side:

    ROOT/BigEarthNet-v1.0/S2A_MSIL2A_20170613T101031_0_45/
        S2A_MSIL2A_20170613T101031_0_45_B01.tif ... _B12.tif, _B8A.tif     (uint16, 120/60/20 px)
        S2A_MSIL2A_20170613T101031_0_45_labels_metadata.json
    ROOT/BigEarthNet-S1-v1.0/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39/
        ..._VV.tif, ..._VH.tif                                            (float32 dB, 120 px)
        ..._labels_metadata.json    (its "corresponding_s2_patch" names the S2 patch)
    ROOT/{train,val,test}.csv       optional: the BigEarthNet-MM splits, "S2 name,S1 name" per line

  S2 JSON keys: labels (43-class names), coordinates {ulx, uly, lrx, lry}, projection (WKT),
  tile_source, acquisition_date ("YYYY-MM-DD hh:mm:ss"). S1 JSON keys: labels, coordinates (with
  the archive's typo "lly" for "lry"), projection, corresponding_s2_patch, scene_source,
  acquisition_time ("YYYY-MM-DDThh:mm:ss").

v2.0 (reBEN):

    ROOT/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ...
        tile = patch_id without its last two "_" fields, e.g.
        S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP / S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57
    ROOT/BigEarthNet-S1/<scene>/<s1_name>/<s1_name>_VV.tif, _VH.tif
        scene = s1_name without its last three "_" fields, e.g. S1A_IW_GRDH_1SDV_20170613T165043
    ROOT/Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif   (not read here)
    ROOT/metadata.parquet: patch_id, labels (19-class names), split (train/validation/test),
        country, s1_name, s2v1_name, contains_seasonal_snow, contains_cloud_or_shadow
    ROOT/metadata_for_patches_with_snow_cloud_or_shadow.parquet   optional, the same columns: the
        patches reBEN flags (read too when present; `--exclude-flagged` leaves them out)

Sources checked: the BigEarthNet guide's example patches (kai-tub/ben-docs), bigearthnet_common's
JSON key sets, torchgeo's BigEarthNet/BigEarthNetV2 loaders, and the reBEN pipeline
(kai-tub/bigearthnet-pipeline: ben-metadata-finalizer.sql, ben-data-finalizer.nu).

`scan_archive` lists the S1/S2 pairs (and the pairs it cannot form) without reading any raster;
`load_pair` reads one pair's 14 bands by name with rasterio and raises `BadPatch` with the reason
for anything the converter must quarantine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from hqjepa.bands import S1_BANDS, S2_BANDS, native_size_px
from hqjepa.data.labels import LABELS19, UnknownLabelError, labels43_to_19, to_multi_hot

S2_V1_DIR = "BigEarthNet-v1.0"
S1_V1_DIR = "BigEarthNet-S1-v1.0"
S2_V2_DIR = "BigEarthNet-S2"
S1_V2_DIR = "BigEarthNet-S1"
V2_METADATA = "metadata.parquet"
# reBEN publishes the patches with seasonal snow, cloud or cloud shadow in a second file, same columns
V2_FLAGGED_METADATA = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
V2_FLAG_COLUMNS = ("contains_seasonal_snow", "contains_cloud_or_shadow")
V2_REFERENCE_MAPS = "Reference_Maps"
V1_SPLIT_FILES = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}
V2_METADATA_COLUMNS = (
    "patch_id",
    "labels",
    "split",
    "country",
    "s1_name",
    "s2v1_name",
    "contains_seasonal_snow",
    "contains_cloud_or_shadow",
)

S2_DTYPE = np.dtype("uint16")
S1_DTYPE = np.dtype("float32")
_TILE_RE = re.compile(r"T\d{2}[A-Z]{3}")
_DATE_RE = re.compile(r"(\d{8})T\d{5,6}")


class NotBigEarthNetError(ValueError):
    """The archive root does not hold a BigEarthNet v1.0 or v2.0 layout."""


class BadPatch(Exception):
    """A pair that cannot be converted; `reason` says why, `path` points at the culprit."""

    def __init__(self, reason: str, path: str | Path | None = None):
        super().__init__(reason if path is None else f"{reason}: {path}")
        self.reason, self.path = reason, None if path is None else str(path)


@dataclass(frozen=True)
class PairRecord:
    """One S2 patch and its S1 partner, located on disk (no raster read yet)."""

    patch_id: str  # S2 patch name (v2: the reBEN patch_id)
    s1_patch_id: str
    s2_dir: str
    s1_dir: str
    layout: str  # "v1" or "v2"
    labels19: tuple[str, ...] | None = None  # v2: from metadata.parquet; v1: from the S2 JSON
    split: str | None = None
    country: str | None = None
    s2v1_name: str | None = None  # v2: the pair's v1.0 S2 name (exclude lists of v1.0 use it)
    flags: tuple[str, ...] = ()  # v2: the quality flags set in the metadata (V2_FLAG_COLUMNS)
    flags_source: str | None = None  # v2: the metadata file the row came from


@dataclass
class ArchiveScan:
    """What `scan_archive` found: convertible pairs and the problems found while pairing."""

    layout: str
    root: str
    pairs: list[PairRecord]
    problems: list[dict] = field(default_factory=list)  # {"patch_id", "s1_patch_id", "reason", "path"}


@dataclass
class PairData:
    """A pair read from disk: bands at native resolution plus its labels and metadata."""

    bands: dict[str, np.ndarray]
    labels19: np.ndarray  # uint8 [19]
    labels43: np.ndarray | None  # uint8 [43] or None (v2 has 19-class labels only)
    tile: str | None
    date: str | None  # ISO date of the S2 acquisition


# --- naming ---------------------------------------------------------------------------------------


def v2_tile_folder(patch_id: str) -> str:
    """reBEN S2 tile folder of a patch: the patch id without its last two fields."""
    return "_".join(patch_id.split("_")[:-2])


def v2_s1_scene_folder(s1_name: str) -> str:
    """reBEN S1 scene folder of a patch: the S1 name without its last three fields."""
    return "_".join(s1_name.split("_")[:-3])


def band_path(patch_dir: str | Path, patch: str, band: str) -> Path:
    """The GeoTIFF of one band of one patch: `patch_dir/{patch}_{band}.tif`."""
    return Path(patch_dir) / f"{patch}_{band}.tif"


def metadata_json_path(patch_dir: str | Path, patch: str) -> Path:
    """A v1 patch's label metadata: `patch_dir/{patch}_labels_metadata.json`."""
    return Path(patch_dir) / f"{patch}_labels_metadata.json"


def tile_of(name: str) -> str | None:
    """MGRS tile of an S2 product or patch name (e.g. 'T33UUP'), if the name carries it."""
    m = _TILE_RE.search(name)
    return m.group(0) if m else None


def date_of(name: str) -> str | None:
    """ISO acquisition date of a Sentinel product or patch name ('..._20170613T101031_...')."""
    m = _DATE_RE.search(name)
    return datetime.strptime(m.group(1), "%Y%m%d").date().isoformat() if m else None


# --- layout detection and scanning ----------------------------------------------------------------


def detect_layout(root: str | Path) -> str:
    """'v1' or 'v2' from the folders under `root`; NotBigEarthNetError otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise NotBigEarthNetError(f"{root}: archive root does not exist or is not a directory")
    v1 = (root / S2_V1_DIR).is_dir() and (root / S1_V1_DIR).is_dir()
    v2 = (root / S2_V2_DIR).is_dir() and (root / S1_V2_DIR).is_dir() and (root / V2_METADATA).is_file()
    if v1 and v2:
        raise NotBigEarthNetError(f"{root}: holds both a v1.0 and a v2.0 archive; pass --layout v1 or v2")
    if v1:
        return "v1"
    if v2:
        return "v2"
    raise NotBigEarthNetError(
        f"{root} is not a BigEarthNet archive root: expected {S2_V1_DIR}/ and {S1_V1_DIR}/ (v1.0), or "
        f"{S2_V2_DIR}/, {S1_V2_DIR}/ and {V2_METADATA} (v2.0 / reBEN)"
    )


def scan_archive(root: str | Path, layout: str = "auto") -> ArchiveScan:
    """List the S1/S2 pairs of an archive, sorted by S2 patch id, and the pairs that cannot be formed."""
    root = Path(root)
    found = detect_layout(root)
    if layout not in ("auto", "v1", "v2"):
        raise ValueError(f"layout {layout!r}: must be auto, v1 or v2")
    if layout != "auto" and layout != found:
        raise NotBigEarthNetError(f"{root}: --layout {layout} requested but the archive is a {found} layout")
    scan = _scan_v1(root) if found == "v1" else _scan_v2(root)
    scan.pairs.sort(key=lambda p: p.patch_id)
    scan.problems.sort(key=lambda p: (p.get("patch_id") or "", p.get("s1_patch_id") or ""))
    return scan


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadPatch("missing labels_metadata.json", path) from None
    except (OSError, ValueError) as e:
        raise BadPatch(f"unreadable labels_metadata.json ({e.__class__.__name__})", path) from None
    if not isinstance(data, dict):
        raise BadPatch("labels_metadata.json is not a JSON object", path)
    return data


def _v1_splits(root: Path) -> dict[str, str]:
    """S2 patch name -> split from the optional BigEarthNet-MM split files next to the archive."""
    out: dict[str, str] = {}
    for split, name in V1_SPLIT_FILES.items():
        path = root / name
        if path.is_file():
            for line in path.read_text().splitlines():
                s2 = line.split(",")[0].strip()
                if s2:
                    out[s2] = split
    return out


def _scan_v1(root: Path) -> ArchiveScan:
    s2_root, s1_root = root / S2_V1_DIR, root / S1_V1_DIR
    splits = _v1_splits(root)
    pairs, problems, partnered = [], [], set()
    s2_names = {p.name for p in s2_root.iterdir() if p.is_dir()}
    for s1_dir in sorted(p for p in s1_root.iterdir() if p.is_dir()):
        s1 = s1_dir.name
        try:
            meta = _read_json(metadata_json_path(s1_dir, s1))
            s2 = meta.get("corresponding_s2_patch")
            if not isinstance(s2, str) or not s2:
                raise BadPatch("S1 labels_metadata.json lacks corresponding_s2_patch", metadata_json_path(s1_dir, s1))
        except BadPatch as e:
            problems.append({"patch_id": None, "s1_patch_id": s1, "reason": e.reason, "path": e.path})
            continue
        if s2 not in s2_names:
            problems.append(
                {"patch_id": s2, "s1_patch_id": s1, "reason": "S2 partner patch absent", "path": str(s2_root / s2)}
            )
            continue
        partnered.add(s2)
        pairs.append(
            PairRecord(
                patch_id=s2,
                s1_patch_id=s1,
                s2_dir=str(s2_root / s2),
                s1_dir=str(s1_dir),
                layout="v1",
                split=splits.get(s2),
            )
        )
    for s2 in sorted(s2_names - partnered):
        problems.append(
            {"patch_id": s2, "s1_patch_id": None, "reason": "S1 partner patch absent", "path": str(s2_root / s2)}
        )
    return ArchiveScan("v1", str(root), pairs, problems)


def _read_v2_metadata(path: Path) -> tuple[dict[str, list], int]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any read failure means the same thing to the user
        raise NotBigEarthNetError(f"{path}: unreadable {path.name} ({e})") from None
    missing = [c for c in ("patch_id", "labels", "s1_name") if c not in table.column_names]
    if missing:
        raise NotBigEarthNetError(f"{path}: {path.name} lacks columns {missing}; reBEN has {list(V2_METADATA_COLUMNS)}")
    wanted = ("patch_id", "labels", "s1_name", "split", "country", "s2v1_name") + V2_FLAG_COLUMNS
    cols = {c: table.column(c).to_pylist() for c in wanted if c in table.column_names}
    return cols, table.num_rows


def _scan_v2(root: Path) -> ArchiveScan:
    """Pairs of metadata.parquet and, when present, of reBEN's file of flagged (snow, cloud) patches."""
    pairs, problems = [], []
    s2_root, s1_root = root / S2_V2_DIR, root / S1_V2_DIR
    sources = [root / V2_METADATA] + [p for p in (root / V2_FLAGGED_METADATA,) if p.is_file()]
    for path in sources:
        cols, n = _read_v2_metadata(path)
        for i in range(n):
            pid, s1 = cols["patch_id"][i], cols["s1_name"][i]
            s2_dir = s2_root / v2_tile_folder(pid) / pid
            s1_dir = s1_root / v2_s1_scene_folder(s1) / s1
            labels = tuple(cols["labels"][i] or ())
            bad = [x for x in labels if x not in LABELS19]
            if bad:
                problems.append(
                    {
                        "patch_id": pid,
                        "s1_patch_id": s1,
                        "path": str(path),
                        "reason": f"unknown 19-class label {bad[0]!r} in {path.name}",
                    }
                )
            elif not s2_dir.is_dir():
                problems.append(
                    {"patch_id": pid, "s1_patch_id": s1, "reason": "S2 partner patch absent", "path": str(s2_dir)}
                )
            elif not s1_dir.is_dir():
                problems.append(
                    {"patch_id": pid, "s1_patch_id": s1, "reason": "S1 partner patch absent", "path": str(s1_dir)}
                )
            else:
                pairs.append(
                    PairRecord(
                        patch_id=pid,
                        s1_patch_id=s1,
                        s2_dir=str(s2_dir),
                        s1_dir=str(s1_dir),
                        layout="v2",
                        labels19=labels,
                        split=cols.get("split", [None] * n)[i],
                        country=cols.get("country", [None] * n)[i],
                        s2v1_name=cols.get("s2v1_name", [None] * n)[i],
                        flags=tuple(f for f in V2_FLAG_COLUMNS if cols.get(f, [False] * n)[i]),
                        flags_source=path.name,
                    )
                )
    return ArchiveScan("v2", str(root), pairs, problems)


# --- reading --------------------------------------------------------------------------------------


def read_band(path: Path, band: str) -> np.ndarray:
    """Read one single-band GeoTIFF, checking size and dtype; BadPatch on any problem."""
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        raise BadPatch(f"missing band file {band}", path)
    expected_dtype = S2_DTYPE if band in S2_BANDS else S1_DTYPE
    n = native_size_px(band)
    try:
        with rasterio.open(path) as ds:
            if ds.count != 1:
                raise BadPatch(f"{band}: {ds.count} raster bands in the file, expected 1", path)
            if ds.shape != (n, n):
                raise BadPatch(f"wrong shape {band}: {ds.shape[0]}x{ds.shape[1]}, expected {n}x{n}", path)
            if np.dtype(ds.dtypes[0]) != expected_dtype:
                raise BadPatch(f"wrong dtype {band}: {ds.dtypes[0]}, expected {expected_dtype}", path)
            arr = ds.read(1)
    except BadPatch:
        raise
    except (RasterioError, OSError, ValueError) as e:
        detail = str(e.__cause__ or e).strip().splitlines()[0][:200]  # rasterio chains GDAL's message
        raise BadPatch(f"unreadable or truncated GeoTIFF {band} ({detail})", path) from None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise BadPatch(f"non-finite pixels in {band} ({bad} NaN/inf)", path)
    return arr


def load_pair(rec: PairRecord) -> PairData:
    """Read all 12 S2 and 2 S1 bands of a pair by name, plus its labels; BadPatch on any problem."""
    bands = {b: read_band(band_path(rec.s2_dir, rec.patch_id, b), b) for b in S2_BANDS}
    bands.update({b: read_band(band_path(rec.s1_dir, rec.s1_patch_id, b), b) for b in S1_BANDS})
    tile = tile_of(rec.patch_id)
    date = date_of(rec.patch_id)
    if rec.layout == "v1":
        path = metadata_json_path(rec.s2_dir, rec.patch_id)
        meta = _read_json(path)
        names = meta.get("labels")
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise BadPatch("S2 labels_metadata.json has no list of labels", path)
        try:
            labels43 = to_multi_hot(names, 43)
            labels19 = to_multi_hot(labels43_to_19(names), 19)
        except UnknownLabelError as e:
            raise BadPatch(f"unknown 43-class label ({e})", path) from None
        tile = tile_of(str(meta.get("tile_source", ""))) or tile
        acq = meta.get("acquisition_date")
        if isinstance(acq, str) and len(acq) >= 10:
            date = acq[:10]
    else:
        labels43 = None
        labels19 = to_multi_hot(rec.labels19 or (), 19)
    return PairData(bands=bands, labels19=labels19, labels43=labels43, tile=tile, date=date)
