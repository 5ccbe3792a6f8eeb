"""Synthetic BigEarthNet archives (v1.0 and v2.0 layouts) -> Parquet shards: exact values, labels,
pairing, quarantine of every bad input, resume without duplicates, clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from hqjepa.bands import S1_BANDS, S2_BANDS
from hqjepa.data.bigearthnet import NotBigEarthNetError, scan_archive
from hqjepa.data.convert import convert_archive, plan_conversion
from hqjepa.data.labels import LABELS43, labels43_to_19
from hqjepa.data.shards import MANIFEST, QUARANTINE, ShardError, iter_pairs, load_manifest, shard_files
from hqjepa.data.synth_archive import write_archive

N = 16


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("archives")
    write_archive(root / "v1", N, "v1", seed=1)
    write_archive(root / "v2", N, "v2", seed=2)
    return root


# --- helpers that read the archive the way a user would, independently of the converter ---------


def v1_paths(root: Path, s2: str, s1: str, band: str) -> Path:
    if band in S1_BANDS:
        return root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_{band}.tif"
    return root / "BigEarthNet-v1.0" / s2 / f"{s2}_{band}.tif"


def v2_paths(root: Path, s2: str, s1: str, band: str) -> Path:
    if band in S1_BANDS:
        return root / "BigEarthNet-S1" / "_".join(s1.split("_")[:-3]) / s1 / f"{s1}_{band}.tif"
    return root / "BigEarthNet-S2" / "_".join(s2.split("_")[:-2]) / s2 / f"{s2}_{band}.tif"


def read_tif(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def rows_by_id(shard_dir) -> dict[str, dict]:
    rows = {r["patch_id"]: r for r in iter_pairs(shard_dir)}
    return rows


# --- conversion ------------------------------------------------------------------------------------


def test_v1_archive_converts_with_exact_pixels_labels_and_pairing(archives, tmp_path):
    root = archives / "v1"
    summary = convert_archive(root, tmp_path / "out", shard_size=6, progress=False)
    assert summary.line == f"converted {N} pairs, quarantined 0"
    rows = rows_by_id(tmp_path / "out")
    assert len(rows) == N
    splits = {}
    for name in ("train", "val", "test"):
        for line in (root / f"{name}.csv").read_text().split():
            splits[line.split(",")[0]] = {"val": "validation"}.get(name, name)
    for s1_dir in (root / "BigEarthNet-S1-v1.0").iterdir():
        s1 = s1_dir.name
        s1_meta = json.loads((s1_dir / f"{s1}_labels_metadata.json").read_text())
        s2 = s1_meta["corresponding_s2_patch"]
        row = rows[s2]
        assert row["s1_patch_id"] == s1  # pairing from the S1 JSON
        s2_meta = json.loads((root / "BigEarthNet-v1.0" / s2 / f"{s2}_labels_metadata.json").read_text())
        assert set(row["labels43"]) == set(s2_meta["labels"])
        assert row["labels43"] == [n for n in LABELS43 if n in s2_meta["labels"]]
        assert row["labels19"] == labels43_to_19(s2_meta["labels"])
        assert row["split"] == splits[s2]
        for band in S2_BANDS + S1_BANDS:
            ref = read_tif(v1_paths(root, s2, s1, band))
            got = row["bands"][band]
            assert got.dtype == ref.dtype and got.shape == ref.shape
            assert np.array_equal(got.view(np.uint8), ref.view(np.uint8)), band  # bit for bit
    manifest = load_manifest(tmp_path / "out")
    assert manifest["layout"] == "v1" and manifest["pairs"] == N and manifest["quarantined"] == 0
    assert sum(manifest["split_counts"].values()) == N
    assert [s["file"] for s in manifest["shards"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    # per-band statistics of the same pass equal a direct float64 computation over all stored pixels
    for band in ("B01", "B05", "B08", "VV"):
        allpix = np.concatenate([r["bands"][band].ravel().astype(np.float64) for r in rows.values()])
        st = manifest["band_stats"]["all"][band]
        assert st["count"] == allpix.size
        assert st["mean"] == pytest.approx(allpix.mean(), rel=1e-12)
        assert st["std"] == pytest.approx(allpix.std(), rel=1e-9)
    train = np.concatenate(
        [r["bands"]["B02"].ravel().astype(np.float64) for r in rows.values() if r["split"] == "train"]
    )
    assert manifest["band_stats"]["train"]["B02"]["mean"] == pytest.approx(train.mean(), rel=1e-12)


def test_v2_archive_converts_with_metadata_labels_and_no_43_class_labels(archives, tmp_path):
    root = archives / "v2"
    summary = convert_archive(root, tmp_path / "out", progress=False)
    assert (summary.converted, summary.quarantined) == (N, 0)
    rows = rows_by_id(tmp_path / "out")
    meta = pq.read_table(root / "metadata.parquet").to_pylist()
    assert len(meta) == len(rows) == N
    for m in meta:
        row = rows[m["patch_id"]]
        assert row["s1_patch_id"] == m["s1_name"]
        assert sorted(row["labels19"]) == sorted(m["labels"]) and row["labels43"] is None
        assert row["split"] == m["split"]
        for band in S2_BANDS + S1_BANDS:
            ref = read_tif(v2_paths(root, m["patch_id"], m["s1_name"], band))
            assert np.array_equal(row["bands"][band].view(np.uint8), ref.view(np.uint8)), band
    table = pq.read_table(shard_files(tmp_path / "out")[0], columns=["tile", "date", "country"]).to_pylist()
    assert table[0]["tile"].startswith("T") and table[0]["date"] is not None and table[0]["country"]


# --- bad input ----------------------------------------------------------------------------------


def _rewrite(path: Path, arr: np.ndarray) -> None:
    with rasterio.open(path) as ds:
        profile = ds.profile
    profile.update(width=arr.shape[1], height=arr.shape[0], dtype=arr.dtype.name)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)


def test_every_bad_input_is_quarantined_with_its_reason_and_nothing_else_is_lost(archives, tmp_path):
    clean_root, bad_root = archives / "v1", tmp_path / "damaged"
    shutil.copytree(clean_root, bad_root)
    convert_archive(clean_root, tmp_path / "clean", shard_size=5, progress=False)
    clean = rows_by_id(tmp_path / "clean")
    pairs = scan_archive(bad_root).pairs
    victims = {p.patch_id: p for p in pairs[:8]}
    names = list(victims)
    p = [victims[n] for n in names]
    s2 = lambda rec, band: Path(rec.s2_dir) / f"{rec.patch_id}_{band}.tif"  # noqa: E731
    s1 = lambda rec, band: Path(rec.s1_dir) / f"{rec.s1_patch_id}_{band}.tif"  # noqa: E731
    expected = {}
    s2(p[0], "B05").unlink()
    expected[names[0]] = "missing band file B05"
    data = s2(p[1], "B02").read_bytes()
    s2(p[1], "B02").write_bytes(data[: len(data) // 2])
    expected[names[1]] = "unreadable or truncated GeoTIFF B02"
    s2(p[2], "B03").write_bytes(b"this is not a tiff" * 64)
    expected[names[2]] = "unreadable or truncated GeoTIFF B03"
    _rewrite(s2(p[3], "B8A"), np.ones((59, 59), np.uint16))
    expected[names[3]] = "wrong shape B8A"
    vv = read_tif(s1(p[4], "VV"))
    vv[5, 7] = np.nan
    _rewrite(s1(p[4], "VV"), vv)
    expected[names[4]] = "non-finite pixels in VV"
    vh = read_tif(s1(p[5], "VH"))
    vh[0, 0] = np.inf
    _rewrite(s1(p[5], "VH"), vh)
    expected[names[5]] = "non-finite pixels in VH"
    _rewrite(s2(p[6], "B04"), read_tif(s2(p[6], "B04")).astype(np.float32))
    expected[names[6]] = "wrong dtype B04"
    shutil.rmtree(p[7].s2_dir)  # the S1 folder now names an absent S2 partner
    expected[names[7]] = "S2 partner patch absent"

    summary = convert_archive(bad_root, tmp_path / "bad", shard_size=5, progress=False)
    assert summary.line == f"converted {N - 8} pairs, quarantined 8"
    records = [json.loads(line) for line in (tmp_path / "bad" / QUARANTINE).read_text().splitlines()]
    assert len(records) == 8
    for rec in records:
        assert rec["reason"].startswith(expected[rec["patch_id"]]), rec
        assert rec["path"] and Path(rec["path"]).name.startswith(
            (rec["patch_id"], rec["s1_patch_id"] or rec["patch_id"])
        )
    by_s1 = {r["s1_patch_id"]: r for r in records}
    assert by_s1[p[7].s1_patch_id]["patch_id"] == names[7]
    manifest = load_manifest(tmp_path / "bad")
    assert manifest["quarantined"] == 8 and manifest["pairs"] == N - 8
    assert manifest["quarantine_reasons"]["unreadable or truncated GeoTIFF"] == 2

    # every good pair survives, identical to the clean conversion
    bad = rows_by_id(tmp_path / "bad")
    assert set(bad) == set(clean) - set(names)
    for pid, row in bad.items():
        ref = clean[pid]
        assert row["s1_patch_id"] == ref["s1_patch_id"] and row["labels43"] == ref["labels43"]
        for band in S2_BANDS + S1_BANDS:
            assert np.array_equal(row["bands"][band], ref["bands"][band])


def test_v2_missing_partners_are_quarantined(archives, tmp_path):
    root = tmp_path / "v2"
    shutil.copytree(archives / "v2", root)
    pairs = scan_archive(root).pairs
    shutil.rmtree(pairs[0].s1_dir)
    shutil.rmtree(pairs[1].s2_dir)
    summary = convert_archive(root, tmp_path / "out", progress=False)
    assert (summary.converted, summary.quarantined) == (N - 2, 2)
    reasons = {
        json.loads(x)["patch_id"]: json.loads(x)["reason"]
        for x in (tmp_path / "out" / QUARANTINE).read_text().splitlines()
    }
    assert reasons == {pairs[0].patch_id: "S1 partner patch absent", pairs[1].patch_id: "S2 partner patch absent"}


def test_an_s2_patch_without_s1_partner_is_quarantined(archives, tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(archives / "v1", root)
    victim = scan_archive(root).pairs[3]
    shutil.rmtree(victim.s1_dir)
    summary = convert_archive(root, tmp_path / "out", progress=False)
    assert (summary.converted, summary.quarantined) == (N - 1, 1)
    rec = json.loads((tmp_path / "out" / QUARANTINE).read_text())
    assert (rec["patch_id"], rec["reason"]) == (victim.patch_id, "S1 partner patch absent")


def test_bad_metadata_is_quarantined_too(archives, tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(archives / "v1", root)
    a, b = scan_archive(root).pairs[:2]
    meta_path = Path(a.s2_dir) / f"{a.patch_id}_labels_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "labels": meta["labels"] + ["Peat bogs"]}))  # misspelt class
    (Path(b.s1_dir) / f"{b.s1_patch_id}_labels_metadata.json").write_text("{ truncated")
    summary = convert_archive(root, tmp_path / "out", progress=False)
    # b's S1 folder cannot name its partner, so b's S2 patch is left without one as well
    assert (summary.converted, summary.quarantined) == (N - 2, 3)
    reasons = sorted(json.loads(x)["reason"] for x in (tmp_path / "out" / QUARANTINE).read_text().splitlines())
    assert reasons[0] == "S1 partner patch absent"
    assert reasons[1].startswith("unknown 43-class label") and "Peat bogs" in reasons[1]
    assert reasons[2].startswith("unreadable labels_metadata.json")


# --- resume ---------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_interrupted_conversion_resumes_without_duplicating_rows(archives, tmp_path):
    out = tmp_path / "out"
    done = []

    def crash_after_two(result):
        done.append(result.file)
        if len(done) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        convert_archive(archives / "v1", out, shard_size=4, progress=False, on_shard_done=crash_after_two)
    assert not (out / MANIFEST).exists()
    # a worker killed mid-write leaves a hidden temporary file behind
    (out / ".part-00002.parquet.tmp-deadbeef").write_bytes(b"PAR1 half a shard")
    kept = {f: (out / f).stat().st_mtime_ns for f in done}

    assert convert_archive(archives / "v1", out, shard_size=4, progress=False, max_new_shards=1) is None
    summary = convert_archive(archives / "v1", out, shard_size=4, progress=False)
    assert summary.line == f"converted {N} pairs, quarantined 0"
    assert (summary.shards, summary.new_shards) == (4, 1)
    assert {f: (out / f).stat().st_mtime_ns for f in done} == kept  # finished shards untouched
    assert not list(out.glob(".part-*"))
    ids = [r["patch_id"] for r in iter_pairs(out)]
    assert len(ids) == len(set(ids)) == N
    assert set(ids) == {p.patch_id for p in scan_archive(archives / "v1").pairs}
    # a rerun on a complete directory converts nothing new
    assert convert_archive(archives / "v1", out, shard_size=4, progress=False).new_shards == 0
    # a different grouping cannot silently mix with the shards on disk
    with pytest.raises(ShardError, match="fresh output directory"):
        plan_conversion(archives / "v1", out, shard_size=5)


# --- clear errors ---------------------------------------------------------------------------------


def test_a_root_that_is_not_bigearthnet_gets_one_clear_error(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.tif").write_bytes(b"x")
    with pytest.raises(NotBigEarthNetError, match="not a BigEarthNet archive root.*BigEarthNet-v1.0"):
        scan_archive(tmp_path)
    with pytest.raises(NotBigEarthNetError, match="does not exist"):
        scan_archive(tmp_path / "nope")
    from ray_jobs.convert import main

    assert main(["--archive", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "not a BigEarthNet archive root" in err


def test_a_corrupt_shard_fails_with_its_path(archives, tmp_path):
    out = tmp_path / "out"
    convert_archive(archives / "v2", out, shard_size=8, progress=False)
    victim = out / "part-00001.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])  # truncated: footer gone
    with pytest.raises(ShardError, match=str(victim)):
        shard_files(out)
    with pytest.raises(ShardError, match=str(victim)):
        list(iter_pairs(out))
    corrupted = bytearray(data)  # footer intact, a data page damaged
    corrupted[len(data) // 2 : len(data) // 2 + 4000] = os.urandom(4000)
    victim.write_bytes(bytes(corrupted))
    shard_files(out)  # the footer is fine ...
    with pytest.raises(ShardError, match=str(victim)):  # ... the page checksum is not
        list(iter_pairs(out))


def test_synth_bigearthnet_command(tmp_path, capsys):
    from hqjepa.cli import main

    assert main(["synth-bigearthnet", str(tmp_path / "a"), "--pairs", "3", "--layout", "v2", "--seed", "4"]) == 0
    assert "wrote 3 v2 pairs" in capsys.readouterr().out
    scan = scan_archive(tmp_path / "a")
    assert scan.layout == "v2" and len(scan.pairs) == 3 and not scan.problems
    assert (tmp_path / "a" / "Reference_Maps").is_dir()
    # an existing, non-empty output directory is refused rather than mixed into
    assert main(["synth-bigearthnet", str(tmp_path / "a"), "--pairs", "3", "--layout", "v1"]) == 2
    assert "not empty" in capsys.readouterr().err
