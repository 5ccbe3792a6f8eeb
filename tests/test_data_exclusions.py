"""The archive's own exclusions: --exclude-list (BigEarthNet v1.0's published CSVs or plain lists of
S2/S1 names) and --exclude-flagged (reBEN's snow and cloud/shadow flags). Excluded pairs are recorded
with their reason and counted, never silently dropped; training reads the named split of what is left."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hqjepa.data.bigearthnet import V2_FLAGGED_METADATA, scan_archive
from hqjepa.data.convert import convert_archive
from hqjepa.data.exclusions import EXCLUDED, ExcludeListError, read_exclude_list
from hqjepa.data.shards import iter_pairs, load_manifest, shard_files
from hqjepa.data.synth_archive import write_archive

N = 9


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("excl")
    write_archive(root / "v1", N, "v1", seed=3)
    write_archive(root / "v2", N, "v2", seed=4, flagged=3)
    write_archive(root / "v2file", N, "v2", seed=5, flagged=3, flagged_file=True)
    return root


def _excluded(out: Path) -> dict[str, dict]:
    return {r["patch_id"]: r for r in map(json.loads, (out / EXCLUDED).read_text().splitlines())}


def test_listed_pairs_are_excluded_with_the_list_named_and_training_reads_the_rest(archives, tmp_path):
    from hqjepa.config import Config
    from hqjepa.data.stream import block_decoder
    from ray_jobs.pretrain import training_rows

    pairs = scan_archive(archives / "v1").pairs
    # BigEarthNet v1.0's published format: one S2 patch name per line, no header
    snow = tmp_path / "patches_with_seasonal_snow.csv"
    snow.write_text(f"{pairs[0].patch_id}\n{pairs[1].patch_id}\n")
    # a plain list: a header, a comment, blank lines and an S1 name
    plain = tmp_path / "my_list.txt"
    plain.write_text(f"patch_name\n# cloudy, seen by eye\n\n{pairs[2].s1_patch_id}\n{pairs[1].s1_patch_id}\n")
    out = tmp_path / "out"
    summary = convert_archive(archives / "v1", out, shard_size=4, progress=False, exclude_lists=[snow, plain])
    assert summary.line == f"converted {N - 3} pairs, quarantined 0, excluded 3"

    records = _excluded(out)
    assert set(records) == {p.patch_id for p in pairs[:3]}
    assert records[pairs[0].patch_id]["reason"] == "listed in patches_with_seasonal_snow.csv"
    assert records[pairs[2].patch_id]["reason"] == "listed in my_list.txt"
    assert records[pairs[1].patch_id]["reason"] == "listed in patches_with_seasonal_snow.csv; listed in my_list.txt"
    assert records[pairs[2].patch_id]["s1_patch_id"] == pairs[2].s1_patch_id
    assert {p["patch_id"] for p in iter_pairs(out)} == {p.patch_id for p in pairs[3:]}

    manifest = load_manifest(out)
    assert manifest["excluded"] == 3 and manifest["pairs"] == N - 3
    assert manifest["excluded_by_source"] == {"my_list.txt": 2, "patches_with_seasonal_snow.csv": 2}
    assert [(u["names"], u["excluded"], u["unknown"]) for u in manifest["exclude_lists"]] == [(2, 2, 0), (2, 2, 0)]
    assert sum(manifest["excluded_split_counts"].values()) == 3

    # data.split end to end: the manifest's count and the decoded stream hold the split's kept pairs only
    train = {p.patch_id for p in pairs[3:] if p.split == "train"}
    cfg = Config()
    cfg.data.split = "train"
    assert training_rows(cfg, out) == manifest["split_counts"]["train"] == len(train)
    decode = block_decoder(manifest, split="train")
    keys = np.concatenate([decode(pq.read_table(f))["key"] for f in shard_files(out)])
    assert sorted(keys.tolist()) == sorted(zlib.crc32(p.encode()) for p in train)


def test_exclude_flagged_leaves_out_rebens_flagged_pairs_from_either_metadata_file(archives, tmp_path):
    for name, source in (("v2", "metadata.parquet"), ("v2file", V2_FLAGGED_METADATA)):
        meta = pq.read_table(archives / name / source).to_pylist()
        flagged = {r["patch_id"]: r for r in meta if r["contains_seasonal_snow"] or r["contains_cloud_or_shadow"]}
        assert len(flagged) == 3
        out = tmp_path / name
        summary = convert_archive(archives / name, out, progress=False, exclude_flagged=True)
        assert (summary.converted, summary.excluded) == (N - 3, 3)
        records = _excluded(out)
        assert set(records) == set(flagged)
        for pid, rec in records.items():
            want = [f for f in ("contains_seasonal_snow", "contains_cloud_or_shadow") if flagged[pid][f]]
            assert rec["reason"] == "; ".join(f"flagged {f} in {source}" for f in want)
            assert rec["split"] == flagged[pid]["split"]
        manifest = load_manifest(out)
        assert manifest["exclude_flagged"] is True and manifest["excluded"] == 3
        assert manifest["excluded_by_source"] == {"contains_cloud_or_shadow": 2, "contains_seasonal_snow": 2}
    # without the option the flagged pairs are converted like any other (the companion file is read too)
    assert convert_archive(archives / "v2file", tmp_path / "all", progress=False).converted == N


def test_a_v1_list_excludes_by_rebens_s2v1_name(archives, tmp_path):
    meta = pq.read_table(archives / "v2" / "metadata.parquet").to_pylist()
    lst = tmp_path / "patches_with_cloud_and_shadow.csv"
    lst.write_text(meta[-1]["s2v1_name"] + "\n")
    out = tmp_path / "out"
    assert convert_archive(archives / "v2", out, progress=False, exclude_lists=[lst]).excluded == 1
    assert list(_excluded(out)) == [meta[-1]["patch_id"]]


def test_unknown_names_are_reported_not_fatal_and_bad_lists_are_one_line_exit_2(archives, tmp_path, capsys):
    from ray_jobs.convert import main

    pairs = scan_archive(archives / "v1").pairs
    lst = tmp_path / "snow.csv"
    lst.write_text(f"{pairs[4].patch_id}\nS2A_MSIL2A_20990101T000000_7_7\nS1B_IW_GRDH_1SDV_20990101T000000_33UUP_7_7\n")
    args = ["--archive", str(archives / "v1"), "--layout", "v1", "--shard-size", "64"]
    out = tmp_path / "out"
    summary_out = tmp_path / "plan"
    # the plan step alone (no Ray): --max-new-shards 0 stops before converting anything
    assert main([*args, "--out", str(summary_out), "--exclude-list", str(lst), "--max-new-shards", "0"]) == 0
    printed = capsys.readouterr().out
    assert "excluding 1 pairs (snow.csv: 1)" in printed
    assert f"{lst}: 2 of 3 names match no pair here" in printed
    assert "S2A_MSIL2A_20990101T000000_7_7" in printed

    out.mkdir()
    bad = {
        "missing.csv": None,
        "binary.csv": b"\xff\xfe\x00garbage\x00\x81",
        "empty.csv": b"\n# nothing\n",
        "garbage.csv": f"{pairs[0].patch_id}\nhello world\n".encode(),
    }
    for name, content in bad.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        assert main([*args, "--out", str(out), "--exclude-list", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("convert: error: exclude list") and name in err, err
    assert "line 2: 'hello world' is not a BigEarthNet patch name" in err
    assert main([*args, "--out", str(out), "--exclude-flagged"]) == 2
    assert "--exclude-flagged needs a v2.0 (reBEN) archive" in capsys.readouterr().err
    assert not list(out.iterdir())  # nothing written by a refused run


def test_read_exclude_list_takes_csv_fields_and_rebens_ids(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text(
        "name,reason\n"
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57,snow\n"
        '"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39"\n'
    )
    assert read_exclude_list(p).names == {
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39",
    }
    p.write_text("S2A_MSIL2A_20170613T101031_0_45\nname\n")  # a header after the first line is an error
    with pytest.raises(ExcludeListError, match="line 2"):
        read_exclude_list(p)
