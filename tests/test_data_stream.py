"""The Ray Data stream from shards to training batches, in a local Ray (and one Ray Train worker)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hqjepa.bands import S2_BANDS
from hqjepa.config import MaskConfig
from hqjepa.data.convert import convert_archive
from hqjepa.data.shards import ShardError, band_stats, iter_pairs, load_manifest
from hqjepa.data.synth_archive import write_archive
from hqjepa.data.transforms import stack_s1, stack_s2

N = 14


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    write_archive(root / "archive", N, "v2", seed=11)
    convert_archive(root / "archive", root / "shards", shard_size=5, progress=False)
    return root / "shards"


def _batches(ds, shards, batch_size=4, seed=0):
    """The model's inputs from the training stream: compact batches decoded by the step's expander."""
    from hqjepa.data.compact import BatchExpander
    from ray_jobs._data import compact_torch_batches

    expand = BatchExpander.from_manifest(load_manifest(shards), "train")
    batches = compact_torch_batches(ds.iterator(), batch_size, MaskConfig(), 12, seed, shards, drop_last=False)
    return [expand(b) for b in batches]


def test_stream_yields_shaped_normalised_batches_equal_to_the_reference_transform(ray_local, shards):
    import ray

    from ray_jobs._data import training_dataset

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    try:
        batches = _batches(training_dataset(shards, split=None, shuffle_files=False), shards, batch_size=4)
    finally:
        ctx.execution_options.preserve_order = False
    assert [b["s2"].shape[0] for b in batches] == [4, 4, 4, 2]
    for b in batches:
        assert b["s2"].shape[1:] == (12, 120, 120) and b["s2"].dtype == torch.float32
        assert b["s1"].shape[1:] == (2, 120, 120) and b["labels19"].shape[1:] == (19,)
        assert b["ctx_idx"].dtype == torch.int64 and b["tgt_valid"].dtype == torch.bool
        assert b["tgt_idx"].shape[:2] == (b["s2"].shape[0], 4)
    s2 = torch.cat([b["s2"] for b in batches])
    s1 = torch.cat([b["s1"] for b in batches])
    labels = torch.cat([b["labels19"] for b in batches])
    # the same pairs through the one-process reference transforms, in shard order
    manifest = load_manifest(shards)
    stats = band_stats(manifest, "train")
    pairs = list(iter_pairs(shards))
    ref_s2 = torch.stack([stack_s2(p["bands"], stats=stats) for p in pairs])
    ref_s1 = torch.stack([stack_s1(p["bands"], stats=stats) for p in pairs])
    assert torch.allclose(s2, ref_s2, atol=1e-5) and torch.allclose(s1, ref_s1, atol=1e-5)
    from hqjepa.data.labels import to_multi_hot

    assert torch.equal(
        labels, torch.tensor(np.stack([to_multi_hot(p["labels19"]) for p in pairs]), dtype=torch.float32)
    )


def test_stream_keeps_one_split_normalised_by_its_statistics(ray_local, shards):
    from ray_jobs._data import training_dataset

    manifest = load_manifest(shards)
    batches = _batches(training_dataset(shards, split="train"), shards, batch_size=8)
    s2 = torch.cat([b["s2"] for b in batches])
    assert s2.shape[0] == manifest["split_counts"]["train"]
    # 10 m bands are not resampled: over the train rows their mean is 0 and std 1 exactly
    for band in ("B02", "B03", "B04", "B08"):
        x = s2[:, S2_BANDS.index(band)].double()
        assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4


def _worker_loop(config):
    import ray.train

    from hqjepa.data.compact import BatchExpander
    from ray_jobs._data import compact_torch_batches

    shard = ray.train.get_dataset_shard("train")
    expand = BatchExpander.from_manifest(load_manifest(config["shards"]), "train")
    rank = ray.train.get_context().get_world_rank()
    seen = []
    for epoch in range(2):  # two epochs
        rows = 0
        for batch in compact_torch_batches(
            shard, 4, MaskConfig(), 12, [rank, epoch], config["shards"], shuffle_buffer=8, drop_last=False
        ):
            batch = expand(batch)
            assert batch["s2"].shape[1:] == (12, 120, 120) and torch.isfinite(batch["s2"]).all()
            rows += batch["s2"].shape[0]
        seen.append(rows)
    Path(config["out"]).write_text(json.dumps(seen))


def test_stream_feeds_a_ray_train_worker(ray_local, shards, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_jobs._data import training_dataset

    out = tmp_path / "seen.json"
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"out": str(out), "shards": str(shards)},
        datasets={"train": training_dataset(shards, split=None)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path / "runs"), name="stream"),
    )
    result = trainer.fit()
    assert result.error is None
    assert json.loads(out.read_text()) == [N, N]


def test_corrupt_shards_fail_with_their_path(ray_local, shards, tmp_path):
    import shutil

    from ray_jobs._data import MaskCollateFn, compact_torch_batches, torch_batches, training_dataset

    bad = tmp_path / "shards"
    shutil.copytree(shards, bad)
    victim = bad / "part-00001.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[:-200])  # footer gone: caught before Ray reads
    with pytest.raises(ShardError, match=str(victim)):
        training_dataset(bad)
    damaged = bytearray(data)  # footer fine, data pages damaged
    damaged[len(data) // 3 : len(data) // 3 + 20000] = os.urandom(20000)
    victim.write_bytes(bytes(damaged))
    ds = training_dataset(bad, split=None)  # footers pass
    with pytest.raises(ShardError, match=str(victim)) as info:
        list(compact_torch_batches(ds.iterator(), 4, MaskConfig(), 12, 0, bad))
    assert str(bad / "part-00000.parquet") not in str(info.value)
    ds = training_dataset(bad, split=None, compact=False)  # the host-decode stream reports it too
    with pytest.raises(ShardError, match=str(victim)):
        list(torch_batches(ds.iterator(), 4, MaskCollateFn(MaskConfig(), grid=12), bad))


def test_ray_convert_driver_matches_the_in_process_conversion(ray_local, shards, tmp_path, capsys):
    from ray_jobs.convert import main

    archive = shards.parent / "archive"
    assert main(["--archive", str(archive), "--out", str(tmp_path / "ray"), "--shard-size", "5"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"converted {N} pairs, quarantined 0")
    ray_rows = {p["patch_id"]: p for p in iter_pairs(tmp_path / "ray")}
    ref_rows = {p["patch_id"]: p for p in iter_pairs(shards)}
    assert ray_rows.keys() == ref_rows.keys()
    for pid, row in ray_rows.items():
        assert all(np.array_equal(row["bands"][b], ref_rows[pid]["bands"][b]) for b in row["bands"])
    assert load_manifest(tmp_path / "ray")["band_stats"] == load_manifest(shards)["band_stats"]
