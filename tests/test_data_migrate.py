"""Version-1 shards (bands as Parquet lists) are still read, and `hqjepa migrate-shards` rewrites them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hqjepa.data.convert import convert_archive
from hqjepa.data.shards import (
    BANDS,
    MANIFEST,
    SCHEMA_VERSION,
    band_array,
    band_column,
    iter_pairs,
    load_manifest,
    read_shard_meta,
    shard_files,
    shard_schema,
    shard_tables,
    shard_version,
    verify_shard,
    write_json_atomic,
    write_shard,
)
from hqjepa.data.synth_archive import write_archive


def write_version1(src: Path, dst: Path) -> None:
    """Rewrite current shards as an earlier converter wrote them (schema version 1)."""
    import pyarrow as pa

    from hqjepa.data.labels import LABELS43

    dst.mkdir(parents=True)
    manifest = load_manifest(src)
    for entry in manifest["shards"]:
        path = src / entry["file"]
        meta = read_shard_meta(path)
        tables = list(shard_tables(path))
        table = pa.concat_tables(tables) if tables else shard_schema().empty_table()
        cols = []
        for field in shard_schema(1):
            if field.name in BANDS:
                cols.append(band_column(band_array(table, field.name).reshape(table.num_rows, -1), 1))
            elif field.name == "labels43":
                col = table.column("labels43").combine_chunks()
                raw = np.frombuffer(col.buffers()[1], np.uint8, count=len(col) * 43) if len(col) else np.zeros(0)
                mask = pa.array(~col.is_valid().to_numpy(zero_copy_only=False), pa.bool_())
                cols.append(pa.FixedSizeListArray.from_arrays(pa.array(raw, pa.uint8()), len(LABELS43), mask=mask))
            else:
                cols.append(table.column(field.name).combine_chunks())
        v1 = pa.Table.from_arrays(cols, schema=shard_schema(1))
        entry["bytes"] = write_shard(dst / entry["file"], v1, {**meta, "schema_version": 1})
    for name in ("_quarantine.jsonl", "_excluded.jsonl"):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())
    write_json_atomic(dst / MANIFEST, {**manifest, "schema_version": 1})


@pytest.fixture(scope="module", params=["v1", "v2"])
def old_shards(request, tmp_path_factory):
    """Version-1 shards of an archive in either layout (v2 archives: every labels43 is null)."""
    root = tmp_path_factory.mktemp(f"migrate-{request.param}")
    write_archive(root / "archive", 7, request.param, seed=2)
    convert_archive(root / "archive", root / "current", shard_size=3, progress=False)
    write_version1(root / "current", root / "old")
    return root


def _rows(shards):
    return list(iter_pairs(shards))


def test_version1_shards_are_still_read(old_shards):
    old = old_shards / "old"
    assert load_manifest(old)["schema_version"] == 1
    for f in shard_files(old):
        assert read_shard_meta(f)["schema_version"] == 1
        verify_shard(f)  # every page, incl. all-null labels43 lists that Arrow cannot assemble
    a, b = _rows(old), _rows(old_shards / "current")
    assert [r["patch_id"] for r in a] == [r["patch_id"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["labels43"] == y["labels43"] and x["labels19"] == y["labels19"]
        for band in BANDS:
            assert x["bands"][band].dtype == y["bands"][band].dtype
            assert np.array_equal(x["bands"][band], y["bands"][band])


def test_migrate_shards_rewrites_bit_for_bit_and_resumes(old_shards, capsys):
    from hqjepa.cli import main

    old, new = old_shards / "old", old_shards / "new"
    assert main(["migrate-shards", str(old), str(new), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = load_manifest(new)
    assert summary["shards"] == len(manifest["shards"]) and summary["rewritten"] == summary["shards"]
    assert manifest["schema_version"] == SCHEMA_VERSION == 2
    assert manifest["migrated_from"] == {"path": str(old), "schema_version": 1}
    old_manifest = load_manifest(old)
    for key in ("pairs", "split_counts", "band_stats", "quarantined"):
        assert manifest[key] == old_manifest[key]
    assert manifest["bytes"] == sum((new / e["file"]).stat().st_size for e in manifest["shards"])
    for f in shard_files(new):
        meta = read_shard_meta(f)
        old_meta = read_shard_meta(old / Path(f).name)
        assert meta == {**old_meta, "schema_version": 2}
        assert all(shard_version(t.schema) == 2 for t in shard_tables(f))
    a, b = _rows(old), _rows(new)
    assert len(a) == len(b) == old_manifest["pairs"]
    for x, y in zip(a, b, strict=True):
        assert {k: x[k] for k in x if k != "bands"} == {k: y[k] for k in y if k != "bands"}
        for band in BANDS:
            assert x["bands"][band].dtype == y["bands"][band].dtype
            assert np.array_equal(x["bands"][band].view(np.uint8), y["bands"][band].view(np.uint8))
    # a rerun finds the finished migration; an interrupted one keeps its finished shards
    assert main(["migrate-shards", str(old), str(new), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["rewritten"] == 0
    (new / MANIFEST).unlink()
    assert main(["migrate-shards", str(old), str(new), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == len(manifest["shards"])


def test_migrate_shards_refuses_in_place_and_unknown_directories(old_shards, tmp_path, capsys):
    from hqjepa.cli import main

    assert main(["migrate-shards", str(old_shards / "old"), str(old_shards / "old")]) == 2
    assert "new directory" in capsys.readouterr().err
    assert main(["migrate-shards", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqjepa migrate-shards: error:") and "no manifest" in err
