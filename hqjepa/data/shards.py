"""Parquet shards of converted BigEarthNet pairs: schema, atomic writes, manifest, `iter_pairs`.

One row per S1/S2 pair (schema version 2, what the converter writes):

    patch_id      string        S2 patch name (v2: reBEN patch_id)
    s1_patch_id   string        S1 patch name
    split         string?       train / validation / test, or null
    tile          string?       MGRS tile of the S2 acquisition, e.g. T33UUP
    date          date32?       S2 acquisition date
    country       string?       (v2 archives)
    B01 ... B12   fixed_size_binary[2*h*w]       S2 bands at their native grid (120/60/20 px), uint16
                                                 reflectances, row-major, as byte planes: the h*w low
                                                 bytes, then the h*w high bytes
    VV, VH        fixed_size_binary[4*14400]     S1 backscatter in dB, float32 120 x 120, as four byte
                                                 planes (least significant byte first)
    labels19      fixed_size_list<uint8>[19]     multi-hot, `labels.LABELS19` order
    labels43      fixed_size_binary[43]?         multi-hot bytes (0/1), `labels.LABELS43` order; null for v2

Encoding (version 2): the band columns LZ4 (`BAND_CODEC`), the others zstd, no dictionary on the
bands. The byte planes put the near-constant high bytes of uint16 reflectances and the exponent
bytes of float32 dB values side by side, which is what lets a fast codec compress them (plain
little-endian values do not compress under LZ4 at all); unlike Parquet's list encoding, a
fixed-size binary value is read without per-element levels, so a band arrives as one buffer per
page. `pack_planes` / `unpack_planes` convert. Why this layout (sizes and read rates of the
alternatives) is in docs/design.md, "Shards and manifest".

Schema version 1 (earlier converters) stored the bands as fixed_size_list<uint16>[h*w] and
fixed_size_list<float32>[14400] with zstd and BYTE_STREAM_SPLIT (~180 KB per pair on synthetic
scenes, but ~5x slower to read) and labels43 as fixed_size_list<uint8>[43]? (which Arrow up to 25
cannot read back when a row is null: apache/arrow#35692; such shards hold only null labels43, and
the readers here take them as such). Every reader here takes both versions, telling them apart by the
footer's `schema_version` (`shard_version`); `migrate_shards` (`hqjepa migrate-shards OLD NEW`)
rewrites a version-1 directory as version 2. Either way the storage is lossless: values read back
equal the GeoTIFF pixels bit for bit. Pages carry CRC checksums.

A shard is written to a hidden temporary name and renamed into place, so a half-written shard is
never visible; its footer's key-value metadata (`hqjepa`) records the group of pairs it covers,
the pairs it quarantined and per-band statistics of its rows, so a resumed conversion can rebuild
the manifest from the shards alone. `_manifest.json` lists the shards, row counts, split counts,
the quarantine count and per-band mean/std (merged across shards with Chan et al.'s pairwise
update in float64).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from hqjepa.bands import S1_BANDS, S2_BANDS, native_size_px
from hqjepa.data.labels import LABELS19, LABELS43
from hqjepa.data.transforms import BandStats
from hqjepa.runs.storage import is_uri, join, resolve  # path-or-URI helpers, one definition

SCHEMA_VERSION = 2  # what the converter writes
READABLE_VERSIONS = (1, 2)  # what every reader here takes
BAND_CODEC = "lz4"  # Parquet codec of the band columns (version 2); the other columns use zstd
MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.jsonl"
META_KEY = b"hqjepa"
BANDS: tuple[str, ...] = S2_BANDS + S1_BANDS
ID_COLUMNS = ("patch_id", "s1_patch_id", "split", "tile", "date", "country")
LABEL_COLUMNS = ("labels19", "labels43")
NO_SPLIT = "none"


class ShardError(RuntimeError):
    """A shard or manifest that cannot be used; the message starts with its path."""


def shard_name(index: int) -> str:
    """File name of shard `index`: `part-{index:05d}.parquet`."""
    return f"part-{index:05d}.parquet"


def shard_schema(version: int = SCHEMA_VERSION):
    """The pyarrow schema of a shard of schema `version` (see the module docstring for the columns)."""
    import pyarrow as pa

    if version not in READABLE_VERSIONS:
        raise ValueError(f"shard schema version {version}: known versions are {READABLE_VERSIONS}")

    fields = [
        pa.field("patch_id", pa.string(), nullable=False),
        pa.field("s1_patch_id", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("tile", pa.string()),
        pa.field("date", pa.date32()),
        pa.field("country", pa.string()),
    ]
    for b in BANDS:
        n, dt = native_size_px(b), band_dtype(b)
        if version == 1:
            typ = pa.list_(pa.uint16() if dt == np.uint16 else pa.float32(), n * n)
        else:
            typ = pa.binary(dt.itemsize * n * n)
        fields.append(pa.field(b, typ, nullable=False))
    fields.append(pa.field("labels19", pa.list_(pa.uint8(), len(LABELS19)), nullable=False))
    labels43 = pa.list_(pa.uint8(), len(LABELS43)) if version == 1 else pa.binary(len(LABELS43))
    fields.append(pa.field("labels43", labels43))
    return pa.schema(fields, metadata={b"hqjepa_schema_version": str(version).encode()})


def band_dtype(band: str) -> np.dtype:
    """Stored dtype of a band column: uint16 for S2 reflectances, float32 for S1 dB (little-endian)."""
    return np.dtype("<u2") if band in S2_BANDS else np.dtype("<f4")


def shard_version(schema) -> int:
    """Schema version of a shard or block from its band columns' types: 1 (lists) or 2 (byte planes)."""
    import pyarrow as pa

    typ = schema.field(BANDS[0]).type
    return 2 if pa.types.is_fixed_size_binary(typ) else 1


def pack_planes(values: np.ndarray) -> np.ndarray:
    """[rows, ...] values -> uint8 [rows, itemsize * n]: the byte planes of each row's n values
    (little-endian, least significant plane first), the version-2 band encoding."""
    v = np.asarray(values)
    rows = v.shape[0]
    le = np.ascontiguousarray(v.reshape(rows, -1), dtype=v.dtype.newbyteorder("<"))
    raw = le.view(np.uint8).reshape(rows, -1, v.dtype.itemsize)
    return np.ascontiguousarray(raw.transpose(0, 2, 1)).reshape(rows, -1)


def unpack_planes(raw: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Inverse of `pack_planes`: uint8 [rows, itemsize * n] -> [rows, n] of `dtype` (native order)."""
    dt = np.dtype(dtype).newbyteorder("<")
    raw = np.asarray(raw, dtype=np.uint8)
    rows = raw.shape[0]
    planes = raw.reshape(rows, dt.itemsize, -1)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dt).reshape(rows, -1).astype(dt.newbyteorder("="))


# --- running statistics ---------------------------------------------------------------------------


def moments(values: np.ndarray) -> list[float]:
    """[n, mean, M2] of `values` in float64 (two-pass: M2 = sum (x - mean)^2)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return [0.0, 0.0, 0.0]
    mean = float(x.mean())
    return [float(x.size), mean, float(np.square(x - mean).sum())]


def merge_moments(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Chan et al. pairwise merge of [n, mean, M2] partitions:
    n = na + nb, d = mean_b - mean_a, mean = mean_a + d nb / n, M2 = M2a + M2b + d^2 na nb / n."""
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    if n == 0:
        return [0.0, 0.0, 0.0]
    d = mb - ma
    return [n, ma + d * nb / n, qa + qb + d * d * na * nb / n]


def finish_moments(m: Sequence[float]) -> dict[str, float]:
    """[n, mean, M2] -> {count, mean, std} with the population std sqrt(M2 / n) (0 when n = 0)."""
    n, mean, m2 = m
    return {"count": int(n), "mean": float(mean), "std": float(np.sqrt(m2 / n)) if n else 0.0}


# --- writing --------------------------------------------------------------------------------------


def rows_to_table(rows: Sequence[Mapping], version: int = SCHEMA_VERSION):
    """Pairs (dicts with ID_COLUMNS, `bands`, `labels19`, `labels43`) -> a pyarrow Table of the schema
    of `version` (the current one by default; 1 only to write shards as earlier converters did)."""
    import pyarrow as pa

    schema = shard_schema(version)
    cols: dict[str, object] = {}
    for c in ID_COLUMNS:
        cols[c] = pa.array([r.get(c) for r in rows], type=schema.field(c).type)
    for b in BANDS:
        n = native_size_px(b)
        dt = band_dtype(b)
        flat = (
            np.concatenate([np.ascontiguousarray(r["bands"][b], dtype=dt).reshape(-1) for r in rows])
            if rows
            else np.zeros(0, dt)
        )
        if flat.size != len(rows) * n * n:
            raise ValueError(f"band {b}: expected {n}x{n} values per row")
        cols[b] = band_column(flat.reshape(len(rows), n * n), version)
    l19 = np.stack([np.asarray(r["labels19"], np.uint8) for r in rows]) if rows else np.zeros((0, 19), np.uint8)
    cols["labels19"] = pa.FixedSizeListArray.from_arrays(pa.array(l19.reshape(-1)), len(LABELS19))
    has43 = [r.get("labels43") is not None for r in rows]
    l43 = (
        np.stack(
            [
                np.asarray(r["labels43"], np.uint8) if h else np.zeros(43, np.uint8)
                for r, h in zip(rows, has43, strict=True)
            ]
        )
        if rows
        else np.zeros((0, 43), np.uint8)
    )
    mask = pa.array([not h for h in has43], pa.bool_())
    if version == 1:
        cols["labels43"] = pa.FixedSizeListArray.from_arrays(pa.array(l43.reshape(-1)), len(LABELS43), mask=mask)
    else:
        validity = pa.array(has43, pa.bool_()).buffers()[1] if not all(has43) else None
        cols["labels43"] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(len(LABELS43)), len(rows), [validity, pa.py_buffer(np.ascontiguousarray(l43))]
        )
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def band_column(values: np.ndarray, version: int = SCHEMA_VERSION):
    """[rows, h*w] values of one band -> its Arrow column in the layout of schema `version`."""
    import pyarrow as pa

    rows, width = values.shape
    if version == 1:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)
    raw = pack_planes(values)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(raw.shape[1]), rows, [None, pa.py_buffer(raw)])


def write_shard(path: str | Path, table, meta: Mapping, row_group_size: int = 64) -> int:
    """Write `table` to `path` atomically (hidden temp name, fsync, rename); returns bytes on disk.
    The encoding follows the table's layout (`shard_version`; module docstring)."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    schema_md = dict(table.schema.metadata or {})
    schema_md[META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_md)
    if shard_version(table.schema) == 1:
        encoding = {"compression": "zstd", "use_byte_stream_split": [f"{b}.list.element" for b in BANDS]}
    else:
        encoding = {"compression": {c: BAND_CODEC if c in BANDS else "zstd" for c in table.column_names}}
    try:
        pq.write_table(
            table,
            tmp,
            use_dictionary=["patch_id", "s1_patch_id", "split", "tile", "country"],
            row_group_size=row_group_size,
            write_page_checksum=True,
            **encoding,
        )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def is_temporary(name: str) -> bool:
    """Whether a file name is a shard still being written (`.part-*.tmp-*`), never a finished shard."""
    return name.startswith(".part-") and ".tmp-" in name


# --- reading and validation -----------------------------------------------------------------------
# Readers take a local path or a URI that pyarrow's filesystems resolve (s3://bucket/shards,
# gs://..., hdfs://...; e.g. s3://bucket/shards?endpoint_override=host:9000&scheme=http for an
# S3-compatible store), so a cluster streams shards straight from object storage.


def _open_parquet(path: str | Path, **kwargs):
    import pyarrow.parquet as pq

    fs, inner = resolve(path)
    return pq.ParquetFile(fs.open_input_file(inner), **kwargs)


def read_shard_meta(path: str | Path) -> dict:
    """Open a shard's footer and return its `hqjepa` metadata; ShardError naming the path otherwise."""
    path = path if is_uri(path) else Path(path)
    try:
        pf = _open_parquet(path)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file is missing") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for damaged footers
        raise ShardError(f"{path}: corrupt or truncated Parquet shard ({e})") from None
    md = pf.schema_arrow.metadata or {}
    if META_KEY not in md:
        raise ShardError(f"{path}: not an hqjepa shard (no '{META_KEY.decode()}' footer metadata)")
    meta = json.loads(md[META_KEY])
    version = meta.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ShardError(
            f"{path}: shard schema version {version}, this code reads {READABLE_VERSIONS}; convert the archive again"
        )
    if pf.metadata.num_rows != meta.get("rows"):
        raise ShardError(f"{path}: footer has {pf.metadata.num_rows} rows, shard metadata says {meta.get('rows')}")
    if not pf.schema_arrow.remove_metadata().equals(shard_schema(version).remove_metadata()):
        raise ShardError(f"{path}: columns differ from the shard schema (version {version})")
    return meta


def verify_shard(path: str | Path) -> None:
    """Read every page of a shard, checking page CRCs; ShardError naming the path on any damage."""
    read_shard_meta(path)
    for _ in shard_tables(path, batch_size=256):
        pass


def find_corrupt_shards(paths: Sequence[str | Path]) -> list[ShardError]:
    """The ShardErrors of every damaged shard among `paths` (a full read of each; for diagnosis)."""
    errors = []
    for path in paths:
        try:
            verify_shard(path)
        except ShardError as e:
            errors.append(e)
    return errors


def load_manifest(shard_dir: str | Path) -> dict:
    """Read `_manifest.json` of a shard directory (path or URI).

    Raises ShardError when it is missing, unreadable or of another schema version."""
    path = join(shard_dir, MANIFEST)
    try:
        fs, inner = resolve(path)
        with fs.open_input_stream(inner) as f:
            manifest = json.loads(f.read().decode())
    except FileNotFoundError:
        raise ShardError(
            f"{path}: no manifest; is {shard_dir} a converted shard directory "
            "(python ray_jobs/convert.py --archive ... --out ...)?"
        ) from None
    except ValueError as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("schema_version") not in READABLE_VERSIONS:
        version = manifest.get("schema_version")
        raise ShardError(f"{path}: schema version {version}, expected one of {READABLE_VERSIONS}")
    return manifest


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write `data` as JSON to a hidden temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def shard_files(shard_dir: str | Path, validate: bool = True, with_rows_only: bool = True) -> list[str]:
    """Paths (or URIs) of the manifest's shards, footers validated against the manifest
    (ShardError with the path)."""
    manifest = load_manifest(shard_dir)
    out = []
    for entry in manifest["shards"]:
        if with_rows_only and entry["rows"] == 0:
            continue
        path = join(shard_dir, entry["file"])
        if validate:
            meta = read_shard_meta(path)
            if meta["rows"] != entry["rows"]:
                raise ShardError(f"{path}: {meta['rows']} rows but the manifest lists {entry['rows']}")
        out.append(str(path))
    return out


def band_stats(manifest: Mapping, split: str | None = "train") -> BandStats:
    """Normalisation statistics from the manifest: those of `split` if recorded, else of all rows."""
    stats = manifest["band_stats"]
    chosen = stats.get(split) if split else None
    return BandStats.from_dict(chosen or stats["all"])


def band_array(table, band: str) -> np.ndarray:
    """One band column of a shard table of either schema version -> [rows, h, w] values as stored
    (uint16 or float32)."""
    import pyarrow as pa

    n = native_size_px(band)
    col = table.column(band)
    arr = col.chunk(0) if isinstance(col, pa.ChunkedArray) and col.num_chunks == 1 else col
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_fixed_size_binary(arr.type):
        return unpack_planes(binary_values(arr), band_dtype(band)).reshape(len(arr), n, n)
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), n, n)


def binary_values(arr) -> np.ndarray:
    """A fixed_size_binary Arrow array without nulls -> uint8 [rows, width], zero-copy."""
    width = arr.type.byte_width
    buf = arr.buffers()[1]
    flat = np.frombuffer(buf, np.uint8, count=(arr.offset + len(arr)) * width)
    return flat[arr.offset * width :].reshape(len(arr), width)


def iter_pairs(shard_dir: str | Path) -> Iterator[dict]:
    """Yield one dict per converted pair, in shard order.

    Keys: patch_id (S2 name), s1_patch_id, bands (B01..B12, B8A, VV, VH -> numpy array exactly as
    stored, native resolution), labels19 (class names), labels43 (class names, or None where the
    archive only has 19-class labels), split (or None). A damaged shard raises ShardError with its path.
    """
    for path in shard_files(shard_dir):
        for t in shard_tables(path):
            bands = {b: band_array(t, b) for b in BANDS}
            ids = {c: t.column(c).to_pylist() for c in ("patch_id", "s1_patch_id", "split")}
            l19 = _fsl_numpy(t.column("labels19"), len(LABELS19))
            l43_col = t.column("labels43").combine_chunks()
            l43 = _fsl_numpy(l43_col, len(LABELS43))
            valid43 = l43_col.is_valid().to_numpy(zero_copy_only=False)
            for i in range(t.num_rows):
                yield {
                    "patch_id": ids["patch_id"][i],
                    "s1_patch_id": ids["s1_patch_id"][i],
                    "bands": {b: bands[b][i] for b in BANDS},
                    "labels19": [LABELS19[j] for j in np.flatnonzero(l19[i])],
                    "labels43": [LABELS43[j] for j in np.flatnonzero(l43[i])] if valid43[i] else None,
                    "split": ids["split"][i],
                }


def shard_tables(path: str | Path, batch_size: int = 64) -> Iterator:
    """The rows of one shard (either schema version) as pyarrow Tables of up to `batch_size` rows,
    page CRCs verified; ShardError naming the path on damage. A version-1 shard whose labels43 are
    all null (v2 archives), which Arrow cannot read back (apache/arrow#35692), yields them as nulls."""
    import pyarrow as pa

    try:
        pf = _open_parquet(path, page_checksum_verification=True)
        schema, columns, fill = pf.schema_arrow, None, None
        if shard_version(schema) == 1 and _all_null(pf, "labels43"):
            fill = schema.field("labels43")
            columns = [n for n in schema.names if n != fill.name]
        batches = pf.iter_batches(batch_size=batch_size, columns=columns)
    except ShardError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ShardError(f"{path}: corrupt Parquet shard ({e})") from None
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - damaged pages surface as several arrow error types
            raise ShardError(f"{path}: corrupt Parquet shard ({e})") from None
        t = pa.Table.from_batches([batch])
        if fill is not None:
            t = t.append_column(fill, pa.nulls(t.num_rows, fill.type))
        yield t


def _all_null(pf, column: str) -> bool:
    """Whether every row group's statistics say `column` (a list column) holds only null rows."""
    md = pf.metadata
    leaves = [i for i in range(md.num_columns) if md.schema.column(i).path.split(".")[0] == column]
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for i in leaves:
            chunk = group.column(i)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count != group.num_rows:
                return False
            if chunk.num_values != group.num_rows:
                return False
    return bool(leaves)


def _fsl_numpy(col, width: int) -> np.ndarray:
    """A fixed_size_list or fixed_size_binary column -> [rows, width] array (null rows read as zeros)."""
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_binary(arr.type):
        out = binary_values(arr).copy()
        out[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
        return out
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if arr.null_count:
        out = np.zeros((len(arr), width), flat.dtype)
        out[arr.is_valid().to_numpy(zero_copy_only=False)] = flat.reshape(-1, width)
        return out
    return flat.reshape(len(arr), width)
