"""Rewrite a shard directory in the current shard layout: `hqjepa migrate-shards OLD NEW`.

Shards of schema version 1 (bands as Parquet lists) still train as they are, only slower: the
stream reads both layouts. Migration rewrites every shard of OLD's manifest into NEW in the current
layout (`hqjepa.data.shards`, version 2: bands as byte-plane binary columns) with the same rows in
the same order, values bit for bit, and the same footer metadata (group hash, quarantine, per-band
moments) under the new schema version; then `_quarantine.jsonl`, `_excluded.jsonl` and the manifest
(the new version and byte counts, `migrated_from` naming OLD). OLD is only read; it may be a URI
(s3://...). Shards are written atomically and the manifest last, so an interrupted migration is
resumed by running it again: finished shards of NEW are kept.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hqjepa.data.exclusions import EXCLUDED
from hqjepa.data.labels import LABELS43
from hqjepa.data.shards import (
    BANDS,
    MANIFEST,
    QUARANTINE,
    SCHEMA_VERSION,
    ShardError,
    band_array,
    band_column,
    binary_values,
    is_uri,
    join,
    load_manifest,
    read_shard_meta,
    resolve,
    shard_schema,
    shard_tables,
    shard_version,
    write_json_atomic,
    write_shard,
)


def to_current(table, version: int = SCHEMA_VERSION):
    """A shard table of any schema version -> the same rows in the layout of `version` (the current
    one; 1 writes the earlier layout, for comparisons)."""
    import pyarrow as pa

    if shard_version(table.schema) == version:
        return table
    schema = shard_schema(version)
    cols = []
    for field in schema:
        if field.name in BANDS:
            values = band_array(table, field.name)
            cols.append(band_column(values.reshape(table.num_rows, -1), version))
        elif field.name == "labels43":
            old = table.column("labels43").combine_chunks()
            valid = old.is_valid().to_numpy(zero_copy_only=False)
            values = np.zeros((table.num_rows, len(LABELS43)), np.uint8)
            if old.null_count < len(old):
                if pa.types.is_fixed_size_binary(old.type):
                    values[valid] = binary_values(old)[valid]
                else:
                    flat = old.flatten().to_numpy(zero_copy_only=False)  # only the valid rows' values
                    values[valid] = flat.reshape(-1, len(LABELS43))
            if version == 1:
                mask = pa.array(~valid, pa.bool_())
                cols.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), len(LABELS43), mask=mask))
                continue
            validity = None if valid.all() else pa.array(valid, pa.bool_()).buffers()[1]
            cols.append(
                pa.FixedSizeBinaryArray.from_buffers(field.type, table.num_rows, [validity, pa.py_buffer(values)])
            )
        else:
            cols.append(table.column(field.name).combine_chunks().cast(field.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _read_text(location: str) -> bytes | None:
    fs, inner = resolve(location)
    try:
        with fs.open_input_stream(inner) as f:
            return f.read()
    except FileNotFoundError:
        return None


def migrate_shards(src: str | Path, dst: str | Path, progress: bool = True) -> dict:
    """Rewrite the shard directory `src` (path or URI) into the local directory `dst` in the current
    layout (module docstring); returns a summary {shards, pairs, rewritten, kept, bytes_before,
    bytes_after, seconds}."""
    import pyarrow as pa

    t0 = time.perf_counter()
    manifest = load_manifest(src)
    dst = Path(dst)
    if not is_uri(src) and dst.resolve() == Path(src).resolve():
        raise ShardError(f"{dst}: migrate into a new directory, not onto the shards themselves")
    if (dst / MANIFEST).exists():
        done = load_manifest(dst)
        if done.get("schema_version") == SCHEMA_VERSION and done.get("migrated_from", {}).get("path") == str(src):
            n = len(done["shards"])
            return {
                "shards": n,
                "pairs": done["pairs"],
                "rewritten": 0,
                "kept": n,
                "bytes_before": manifest["bytes"],
                "bytes_after": done["bytes"],
                "seconds": 0.0,
            }
        raise ShardError(f"{dst}: already holds a shard directory; migrate into a new directory")
    dst.mkdir(parents=True, exist_ok=True)
    entries, rewritten, kept = [], 0, 0
    for k, entry in enumerate(manifest["shards"]):
        path = join(src, entry["file"])
        meta = read_shard_meta(path)
        out = dst / entry["file"]
        new_meta = {**meta, "schema_version": SCHEMA_VERSION}
        if out.exists():
            try:
                if read_shard_meta(out) == new_meta:
                    entries.append({**entry, "bytes": out.stat().st_size})
                    kept += 1
                    continue
            except ShardError:
                pass
        tables = [to_current(t) for t in shard_tables(path)]
        table = pa.concat_tables(tables) if tables else shard_schema(SCHEMA_VERSION).empty_table()
        if table.num_rows != meta["rows"]:
            raise ShardError(f"{path}: read {table.num_rows} rows, its footer says {meta['rows']}")
        size = write_shard(out, table, new_meta)
        entries.append({**entry, "bytes": size})
        rewritten += 1
        if progress:
            print(f"{k + 1}/{len(manifest['shards'])} {entry['file']}: {meta['rows']} rows", flush=True)
    for name in (QUARANTINE, EXCLUDED):
        text = _read_text(join(src, name))
        if text is not None:
            tmp = dst / f".{name}.tmp"
            tmp.write_bytes(text)
            tmp.replace(dst / name)
    new_manifest = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "bytes": sum(e["bytes"] for e in entries),
        "shards": entries,
        "migrated_from": {"path": str(src), "schema_version": manifest["schema_version"]},
    }
    write_json_atomic(dst / MANIFEST, new_manifest)
    return {
        "shards": len(entries),
        "pairs": manifest["pairs"],
        "rewritten": rewritten,
        "kept": kept,
        "bytes_before": manifest["bytes"],
        "bytes_after": new_manifest["bytes"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of `hqjepa migrate-shards`."""
    p.add_argument("src", metavar="OLD", help="shard directory (path or URI) of an earlier shard layout")
    p.add_argument("dst", metavar="NEW", help="new local directory for the shards in the current layout")
    p.add_argument("--quiet", action="store_true", help="no per-shard progress lines")


def main(args: argparse.Namespace) -> int:
    """Run the migration; prints one JSON summary line. A shard directory that cannot be read is one
    line on stderr and exit status 2."""
    import sys

    try:
        summary = migrate_shards(args.src, args.dst, progress=not args.quiet)
    except ShardError as e:
        print(f"hqjepa migrate-shards: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
