"""Compact batches: the shards' bytes carried to the training step, decoded there on its device.

The input pipeline hands the step the bands as they are stored (schema version 2 of
`hqjepa.data.shards`: native resolution, uint16 reflectances and float32 dB as byte planes), about
276 KB per pair instead of the 806 KB of decoded float32, and the step turns them into model inputs
on its own device, batched (`BatchExpander`): reassemble the values from their byte planes, upsample
the 20 m and 60 m bands to 120 px and standardise. On a GPU that is a few kernels per batch; on a
CPU worker the same code runs on the CPU. The values equal those of the host decode
(`hqjepa.data.stream.decode_block`): the same float32 interpolate call on the same values, then the
same normalisation.

A compact batch (B rows; n the native grid of the group's bands):

    raw_s2_10m   uint8   [B, 4, 2 * 120 * 120]   B02 B03 B04 B08, byte planes (low, high)
    raw_s2_20m   uint8   [B, 6, 2 * 60 * 60]     B05 B06 B07 B8A B11 B12
    raw_s2_60m   uint8   [B, 2, 2 * 20 * 20]     B01 B09
    raw_s1       uint8   [B, 2, 4 * 120 * 120]   VV VH, float32 byte planes (least significant first)
    labels19     float32 [B, 19]
    key          int64   [B]                     CRC-32 of each row's patch id (masks are seeded by it)
    ctx_idx ... tgt_valid                        the multiblock masks, as `collate.py` documents

The `raw_*` tensors that `compact_batches` makes are [B, bands, width] views of [bands, B, width]
memory (each band's rows are gathered into one contiguous run), so they are not C-contiguous;
`.to(device)` keeps that layout and `BatchExpander` reads either.

`compact_batches` builds it from the stream's compact blocks (`stream.compact_block`; Ray Data's
`iter_batches(batch_size=None, batch_format="pyarrow")`), with an optional local shuffle buffer:
the rows of each batch are gathered straight from the blocks into the group tensors, one copy of
their bytes, where Ray's own shuffle buffer and batcher would copy them three times (measured:
its shuffle alone cost the driver about as much CPU as the Parquet read). `CompactCollator`
does the same for one pyarrow Table (`iter_torch_batches(collate_fn=...)`). `BatchExpander` maps a
compact batch to the batch `collate.py` documents (`s2`, `s1` float32 at 120 px). The masks are
drawn from (seed, CRC of the batch's keys) exactly as `collate.MaskCollator` draws them, so a batch
of the same rows gets the same masks on either path.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hqjepa.bands import REFERENCE_SIZE_PX, S1_BANDS, S2_BANDS, native_size_px
from hqjepa.config import MaskConfig
from hqjepa.data.labels import LABELS19
from hqjepa.data.shards import BANDS, band_dtype, binary_values


def _groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    by_size: dict[int, list[str]] = {}
    for b in S2_BANDS:
        by_size.setdefault(native_size_px(b), []).append(b)
    names = {120: "s2_10m", 60: "s2_20m", 20: "s2_60m"}
    return (*((names[n], tuple(bands)) for n, bands in sorted(by_size.items(), reverse=True)), ("s1", S1_BANDS))


GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = _groups()  # (group, bands in S2_BANDS / S1_BANDS order)
RAW_PREFIX = "raw_"


def is_compact(batch: Mapping) -> bool:
    """Whether a batch dict is compact (carries `raw_*` band bytes) rather than decoded (`s2`, `s1`)."""
    return f"{RAW_PREFIX}{GROUPS[0][0]}" in batch


class RowChunk:
    """One Arrow record batch of compact rows with its columns as numpy arrays, made once when the
    chunk enters the shuffle buffer rather than once per batch that draws from it: `bands[group]`
    lists the group's band bytes (uint8 [n, width] each, zero-copy views of the Arrow buffers),
    `labels` float32 [n, 19], `keys` int64 [n]."""

    __slots__ = ("bands", "keys", "labels", "num_rows")

    def __init__(self, batch) -> None:
        import pyarrow as pa

        def array(name: str):
            col = batch.column(name)
            if isinstance(col, pa.ChunkedArray):  # a Table: one chunk, or combined
                col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            return col

        self.num_rows = batch.num_rows
        self.bands = {group: [binary_values(array(b)) for b in bands] for group, bands in GROUPS}
        labels = array("labels19").flatten().to_numpy(zero_copy_only=False)
        self.labels = labels.reshape(self.num_rows, len(LABELS19)).astype(np.float32)
        self.keys = np.asarray(array("key").to_numpy(zero_copy_only=False), dtype=np.int64)


def compact_tensors(table) -> dict[str, torch.Tensor]:
    """A pyarrow Table of compact rows (`stream.compact_block`'s columns) -> the compact batch's
    tensors without masks (module docstring). One copy of the band bytes, into writable tensors."""
    chunk = RowChunk(table)
    out = {f"{RAW_PREFIX}{group}": torch.from_numpy(np.stack(chunk.bands[group], axis=1)) for group, _ in GROUPS}
    out["labels19"] = torch.from_numpy(chunk.labels)  # astype made it a writable copy
    out["key"] = torch.from_numpy(chunk.keys.copy())  # the Arrow buffer itself is read-only
    return out


def _gather(src: np.ndarray, rows: np.ndarray, dst: np.ndarray) -> None:
    """dst[:] = src[rows] for a C-contiguous dst: one copy of the rows' bytes in one call (a Python
    loop over rows cost a call per row and band; fancy indexing into a strided dst, two copies)."""
    first = int(rows[0])
    if int(rows[-1]) - first + 1 == len(rows) and (len(rows) == 1 or bool((np.diff(rows) == 1).all())):
        dst[:] = src[first : first + len(rows)]
    else:  # indices are in range by construction: mode="clip" skips numpy's buffered bounds check
        np.take(src, rows, axis=0, out=dst, mode="clip")


def gather_tensors(blocks: Sequence, picks: Sequence[tuple[int, np.ndarray]], pin_memory: bool = False):
    """Rows of compact blocks -> the compact batch's tensors without masks (module docstring).

    blocks: `RowChunk`s, or pyarrow Tables / record batches of `stream.compact_block`'s columns;
    picks: (block index, row indices) in batch order. One copy of the rows' bytes, into new
    writable (optionally pinned) tensors. A group's tensor is [B, bands, width] as a view of
    [bands, B, width] memory, so that each band's rows are written contiguously (so it is not
    C-contiguous; `.to(device)` keeps the layout, `BatchExpander` takes either)."""
    chunks = [blk if isinstance(blk, RowChunk) else RowChunk(blk) for blk in blocks]
    picks = [(k, np.asarray(rows, dtype=np.int64)) for k, rows in picks if len(rows)]
    b = sum(len(rows) for _, rows in picks)
    out: dict[str, torch.Tensor] = {}
    for group, bands in GROUPS:
        width = band_dtype(bands[0]).itemsize * native_size_px(bands[0]) ** 2
        t = torch.empty((len(bands), b, width), dtype=torch.uint8, pin_memory=pin_memory)
        dst = t.numpy()
        start = 0
        for k, rows in picks:
            for i, src in enumerate(chunks[k].bands[group]):
                _gather(src, rows, dst[i, start : start + len(rows)])
            start += len(rows)
        out[f"{RAW_PREFIX}{group}"] = t.permute(1, 0, 2)
    out["labels19"] = torch.from_numpy(np.concatenate([chunks[k].labels[rows] for k, rows in picks]))
    out["key"] = torch.from_numpy(np.concatenate([chunks[k].keys[rows] for k, rows in picks]))
    return out


def _masks(keys: np.ndarray, mask_cfg: MaskConfig, grid: int, seed: Sequence[int]) -> dict[str, torch.Tensor]:
    """The batch's multiblock masks, drawn from (seed, CRC-32 of its keys) as MaskCollator does."""
    from hqjepa.masks.multiblock import sample_masks

    digest = zlib.crc32(np.ascontiguousarray(keys, dtype="<i8").tobytes())
    return sample_masks(len(keys), grid, mask_cfg, np.random.default_rng([*seed, digest])).as_dict()


def _record_batches(blocks: Iterable) -> Iterator[RowChunk]:
    """Tables -> their record batches (one Arrow array per column: band bytes are read zero-copy),
    each prepared once as a RowChunk."""
    for block in blocks:
        for rb in block.to_batches() if hasattr(block, "to_batches") else [block]:
            if rb.num_rows:
                yield RowChunk(rb)


def compact_batches(
    blocks: Iterable,
    batch_size: int,
    mask_cfg: MaskConfig,
    grid: int,
    seed: int | Sequence[int] = 0,
    shuffle_buffer: int = 0,
    shuffle_seed: int | None = None,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Compact blocks (pyarrow Tables, any number of rows) -> compact batches with masks.

    shuffle_buffer: 0 keeps the rows in stream order; otherwise, like Ray Data's local shuffle
    buffer, a batch is drawn at random (`shuffle_seed`) from at least `shuffle_buffer` +
    `batch_size` buffered rows while the stream lasts, then from what remains. The masks depend on
    the batch's rows, not on the order of batches (`CompactCollator`)."""
    seed = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]
    rng = np.random.default_rng(shuffle_seed)
    held: dict[int, object] = {}  # block id -> Table, while any of its rows are buffered
    src_block = np.zeros(0, np.int64)
    src_row = np.zeros(0, np.int64)
    next_id = 0

    def emit(take: np.ndarray) -> dict[str, torch.Tensor]:
        ids = src_block[take]
        order = list(dict.fromkeys(ids.tolist()))  # blocks in first-use order
        local = {bid: i for i, bid in enumerate(order)}
        rows = src_row[take]
        picks = [(local[bid], rows[ids == bid]) for bid in order]  # the batch's rows, grouped by block
        out = gather_tensors([held[bid] for bid in order], picks, pin_memory)
        out.update(_masks(out["key"].numpy(), mask_cfg, grid, seed))
        return out

    def release(keep: np.ndarray) -> None:
        nonlocal src_block, src_row
        src_block, src_row = src_block[keep], src_row[keep]
        live = set(np.unique(src_block).tolist())
        for bid in [b for b in held if b not in live]:
            del held[bid]

    for block in _record_batches(blocks):
        held[next_id] = block
        src_block = np.concatenate([src_block, np.full(block.num_rows, next_id, np.int64)])
        src_row = np.concatenate([src_row, np.arange(block.num_rows, dtype=np.int64)])
        next_id += 1
        while len(src_block) >= (shuffle_buffer + batch_size if shuffle_buffer else batch_size):
            take = rng.choice(len(src_block), batch_size, replace=False) if shuffle_buffer else np.arange(batch_size)
            batch = emit(take)
            keep = np.ones(len(src_block), bool)
            keep[take] = False
            release(keep)
            yield batch
    while len(src_block) >= batch_size or (len(src_block) and not drop_last):
        n = min(batch_size, len(src_block))
        take = rng.choice(len(src_block), n, replace=False) if shuffle_buffer else np.arange(n)
        batch = emit(take)
        keep = np.ones(len(src_block), bool)
        keep[take] = False
        release(keep)
        yield batch


class CompactCollator:
    """Compact rows (a pyarrow Table) -> compact batch with multiblock masks (module docstring).

    seed: as `collate.MaskCollator` (an int or a sequence, e.g. [seed, rank, epoch]); the masks are
    drawn from (seed, CRC-32 of the batch's keys), the same draw MaskCollator makes for these rows.
    """

    def __init__(self, mask_cfg: MaskConfig, grid: int, seed: int | Sequence[int] = 0):
        self.mask_cfg, self.grid = mask_cfg, grid
        self.seed = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]

    def __call__(self, table) -> dict[str, torch.Tensor]:
        """Collate one batch (thread-safe: no state is changed)."""
        from hqjepa.masks.multiblock import sample_masks

        out = compact_tensors(table)
        keys = out["key"].numpy()
        digest = zlib.crc32(np.ascontiguousarray(keys, dtype="<i8").tobytes())
        masks = sample_masks(len(keys), self.grid, self.mask_cfg, np.random.default_rng([*self.seed, digest]))
        out.update(masks.as_dict())
        return out


def unpack_uint16(raw: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 2 * n] byte planes (low, high) -> float32 [..., n] of the uint16 values."""
    planes = raw.reshape(*raw.shape[:-1], 2, -1).to(torch.int32)
    return (planes[..., 0, :] | (planes[..., 1, :] << 8)).to(torch.float32)


def unpack_float32(raw: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 4 * n] byte planes (least significant first) -> float32 [..., n], bit for bit."""
    planes = raw.reshape(*raw.shape[:-1], 4, -1)
    return planes.transpose(-1, -2).contiguous().view(torch.float32).squeeze(-1)


def _upsample(x: torch.Tensor, size_px: int) -> torch.Tensor:
    """`transforms.resample_array` on a batch [B, C, h, w] (the same interpolate call)."""
    b, c, h, w = x.shape
    if (h, w) == (size_px, size_px):
        return x
    mode = {"mode": "bilinear", "align_corners": False, "antialias": False} if h < size_px else {"mode": "area"}
    return F.interpolate(x.reshape(b * c, 1, h, w), size=(size_px, size_px), **mode).reshape(b, c, size_px, size_px)


class BatchExpander:
    """The step's input decode: compact batch -> the batch `collate.py` documents, on the batch's
    device (module docstring). A batch that is already decoded (no `raw_*` keys) passes unchanged.

    mean, std: float32 [14] in `shards.BANDS` order (S2_BANDS then S1_BANDS), the manifest's statistics.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, size_px: int = REFERENCE_SIZE_PX):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.size_px = size_px
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        pos = {b: i for i, b in enumerate(S2_BANDS)}
        self._index = {g: [pos[b] for b in bands] for g, bands in GROUPS if g != "s1"}

    @classmethod
    def from_manifest(cls, manifest: Mapping, stats_split: str | None = "train", size_px: int = REFERENCE_SIZE_PX):
        """The expander normalising with the manifest's statistics of `stats_split` (as the stream does)."""
        from hqjepa.data.shards import band_stats

        mean, std = band_stats(manifest, stats_split).vectors(BANDS)
        return cls(mean, std, size_px)

    def _device_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            m = torch.tensor(self.mean, dtype=torch.float32)[:, None, None].to(device)
            sd = torch.tensor(self.std, dtype=torch.float32)[:, None, None].to(device)
            self._stats[device] = (m, sd)
        return self._stats[device]

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Expand one batch (module docstring)."""
        if not is_compact(batch):
            return dict(batch)
        raw10 = batch[f"{RAW_PREFIX}{GROUPS[0][0]}"]
        device, b, size = raw10.device, raw10.shape[0], self.size_px
        m, sd = self._device_stats(device)
        n_s2 = len(S2_BANDS)
        s2 = torch.empty((b, n_s2, size, size), dtype=torch.float32, device=device)
        for group, bands in GROUPS:
            if group == "s1":
                continue
            n = native_size_px(bands[0])
            values = unpack_uint16(batch[f"{RAW_PREFIX}{group}"]).reshape(b, len(bands), n, n)
            s2[:, self._index[group]] = _upsample(values, size)
        n1 = native_size_px(S1_BANDS[0])
        s1 = unpack_float32(batch[f"{RAW_PREFIX}s1"]).reshape(b, len(S1_BANDS), n1, n1)
        s1 = _upsample(s1, size)
        s2.sub_(m[:n_s2]).div_(sd[:n_s2])
        s1 = (s1 - m[n_s2:]) / sd[n_s2:]
        out = {k: v for k, v in batch.items() if not k.startswith(RAW_PREFIX)}
        out["s2"], out["s1"] = s2, s1
        return out


def prefetched(iterable: Iterable, depth: int = 2) -> Iterator:
    """Run `iterable` in a background thread up to `depth` items ahead (0: in the caller's thread).
    An exception in it is raised in the caller; leaving the loop early stops the thread."""
    import queue
    import threading

    if depth <= 0:
        yield from iterable
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((False, e))

    thread = threading.Thread(target=produce, name="hqjepa-batches", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
