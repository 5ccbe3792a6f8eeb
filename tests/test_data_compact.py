"""Compact batches (the stored band bytes, decoded by the step) against the host decode, no Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from hqjepa.config import MaskConfig
from hqjepa.data.collate import MaskCollator
from hqjepa.data.compact import (
    BatchExpander,
    compact_batches,
    compact_tensors,
    prefetched,
    unpack_float32,
    unpack_uint16,
)
from hqjepa.data.convert import convert_archive
from hqjepa.data.shards import load_manifest, pack_planes, shard_files, shard_tables, unpack_planes
from hqjepa.data.stream import STREAM_COLUMNS, block_decoder, compact_block
from hqjepa.data.synth_archive import write_archive

N = 12


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    """The same pairs as current (version 2) shards and as version-1 shards of earlier converters."""
    from tests.test_data_migrate import write_version1

    root = tmp_path_factory.mktemp("compact")
    write_archive(root / "archive", N, "v2", seed=5)
    convert_archive(root / "archive", root / "v2", shard_size=5, progress=False)
    write_version1(root / "v2", root / "v1")
    return {"v2": root / "v2", "v1": root / "v1"}


def _tables(shards):
    return [t.select(list(STREAM_COLUMNS)) for f in shard_files(shards) for t in shard_tables(f, batch_size=3)]


@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("split", [None, "train"])
def test_compact_batches_decoded_on_the_step_equal_the_host_decode(shard_dirs, layout, split):
    """The values the model sees: the compact path (compact_block -> compact_batches -> BatchExpander)
    against today's host decode (decode_block -> MaskCollator) on the same pairs: s2 and s1 within
    1e-5 (they are in fact equal on the CPU), labels, keys and masks equal."""
    shards = shard_dirs[layout]
    manifest = load_manifest(shards)
    mask_cfg, seed, batch = MaskConfig(), [3, 0, 1], 4
    decode = block_decoder(manifest, split=split)
    host = {k: np.concatenate([decode(t)[k] for t in _tables(shards)]) for k in ("s2", "s1", "labels19", "key")}
    expand = BatchExpander.from_manifest(manifest, "train")
    blocks = [compact_block(t, split=split) for t in _tables(shards)]
    got = [expand(b) for b in compact_batches(blocks, batch, mask_cfg, 12, seed, drop_last=False)]
    rows = sum(len(b["key"]) for b in got)
    assert rows == (manifest["pairs"] if split is None else manifest["split_counts"]["train"]) == len(host["key"])
    start = 0
    for b in got:
        n = len(b["key"])
        ref = MaskCollator(mask_cfg, 12, seed)({k: v[start : start + n] for k, v in host.items()})
        assert set(ref) <= set(b)
        for k in ("s2", "s1"):
            assert b[k].dtype == torch.float32 and b[k].shape == ref[k].shape
            assert torch.allclose(b[k], ref[k], rtol=0, atol=1e-5), k
        for k in ("labels19", "ctx_idx", "ctx_valid", "tgt_idx", "tgt_valid"):
            assert torch.equal(b[k], ref[k]), k
        assert np.array_equal(b["key"].numpy(), host["key"][start : start + n])
        start += n


def test_shuffle_buffer_yields_every_row_once_and_is_seeded(shard_dirs):
    blocks = [compact_block(t) for t in _tables(shard_dirs["v2"])]
    keys = np.concatenate([b.column("key").to_numpy() for b in blocks])

    def order(shuffle_buffer, shuffle_seed, drop_last=False):
        return np.concatenate(
            [
                b["key"].numpy()
                for b in compact_batches(
                    blocks, 4, MaskConfig(), 12, 0, shuffle_buffer, shuffle_seed, drop_last=drop_last
                )
            ]
        )

    assert np.array_equal(order(0, None), keys)  # no buffer: stream order
    a, b, c = order(6, 1), order(6, 1), order(6, 2)
    assert sorted(a) == sorted(keys) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, keys)
    assert len(order(6, 1, drop_last=True)) == len(keys) // 4 * 4


def test_shuffled_batches_carry_each_rows_own_bytes_labels_and_values(shard_dirs):
    """The shuffle buffer gathers scattered rows (the indexed-copy path, not the slice path): every
    row of every batch has its own band bytes and labels, and decodes to the host decode's values
    of the pair its key names."""
    shards = shard_dirs["v2"]
    manifest = load_manifest(shards)
    tables = _tables(shards)
    blocks = [compact_block(t) for t in tables]
    whole = compact_tensors(pa.concat_tables(blocks))
    row_of = {int(k): i for i, k in enumerate(whole["key"].numpy())}
    decode = block_decoder(manifest, split=None)
    host = {k: np.concatenate([decode(t)[k] for t in tables]) for k in ("s2", "s1")}
    expand = BatchExpander.from_manifest(manifest, "train")
    seen = []
    for b in compact_batches(blocks, 4, MaskConfig(), 12, 0, shuffle_buffer=6, shuffle_seed=3, drop_last=False):
        rows = [row_of[int(k)] for k in b["key"].numpy()]
        seen += rows
        for name, t in b.items():
            if name.startswith("raw_") or name == "labels19":
                assert t.shape[0] == len(rows) and torch.equal(t, whole[name][rows]), name
        values = expand(b)
        for k in ("s2", "s1"):
            assert torch.allclose(values[k], torch.from_numpy(host[k][rows]), rtol=0, atol=1e-5), k
    assert sorted(seen) == list(range(manifest["pairs"])) and seen != sorted(seen)


def test_byte_planes_round_trip_every_bit():
    rng = np.random.default_rng(0)
    u16 = rng.integers(0, 65536, size=(3, 400), dtype=np.uint16)
    u16[0, :3] = [0, 32768, 65535]
    f32 = rng.standard_normal((3, 400)).astype(np.float32) * 30
    f32[0, :5] = [np.inf, -np.inf, np.nan, -0.0, np.finfo(np.float32).tiny]
    for values in (u16, f32):
        raw = pack_planes(values)
        assert raw.dtype == np.uint8 and raw.shape == (3, values.itemsize * 400)
        assert np.array_equal(unpack_planes(raw, values.dtype).view(np.uint8), values.view(np.uint8))
    assert torch.equal(unpack_uint16(torch.from_numpy(pack_planes(u16))), torch.from_numpy(u16.astype(np.float32)))
    back = unpack_float32(torch.from_numpy(pack_planes(f32))).numpy()
    assert np.array_equal(back.view(np.uint32), f32.view(np.uint32))


def test_expander_leaves_decoded_batches_alone():
    batch = {"s2": torch.zeros(2, 12, 120, 120), "s1": torch.zeros(2, 2, 120, 120)}
    out = BatchExpander(np.zeros(14, np.float32), np.ones(14, np.float32))(batch)
    assert out["s2"] is batch["s2"] and out["s1"] is batch["s1"]


def test_prefetched_keeps_order_raises_errors_and_stops_early():
    assert list(prefetched(iter(range(50)), 3)) == list(range(50))
    assert list(prefetched(iter(range(5)), 0)) == list(range(5))

    def failing():
        yield 1
        raise ValueError("boom")

    it = prefetched(failing(), 2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="boom"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetched(endless(), 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # leaving the loop stops the producer thread
    n = len(produced)
    assert n <= 3 + 2 + 2
    import time

    time.sleep(0.3)
    assert len(produced) == n


def test_trainer_step_on_a_compact_batch_equals_the_step_on_the_decoded_batch(shard_dirs):
    """The same first optimiser step (losses, gradient norm) whether the batch arrives decoded or
    compact and is decoded by the Trainer's input_transform."""
    from hqjepa.config import load_config
    from hqjepa.engine import Trainer
    from hqjepa.models.hqjepa import HQJEPA

    shards = shard_dirs["v2"]
    manifest = load_manifest(shards)
    cfg = load_config("configs/tiny.yaml")
    tables = _tables(shards)
    compact = next(compact_batches([compact_block(t) for t in tables], 4, cfg.mask, cfg.model.grid, 7))
    decode = block_decoder(manifest, split=None)
    host = {k: np.concatenate([decode(t)[k] for t in tables])[:4] for k in ("s2", "s1", "labels19", "key")}
    decoded = MaskCollator(cfg.mask, cfg.model.grid, 7)(host)
    metrics = []
    for batch, transform in ((decoded, None), (compact, BatchExpander.from_manifest(manifest))):
        torch.manual_seed(0)
        trainer = Trainer(HQJEPA(cfg), cfg, steps_per_epoch=10, input_transform=transform)
        metrics.append(trainer.train_step([batch]))
    for k in ("loss", "loss_pred", "loss_cm", "loss_sig", "loss_fqs", "grad_norm"):
        assert metrics[0][k] == pytest.approx(metrics[1][k], rel=1e-6, abs=1e-7), k
