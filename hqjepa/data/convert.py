"""BigEarthNet archive -> Parquet shards: planning, one shard per task, quarantine, resume, manifest.

    plan = plan_conversion(archive, out, layout="auto")                  # scan, group, find done shards
    results = [convert_shard(task) for task in plan.pending]              # or as Ray tasks
    summary = finalise(plan, plan.done + results)                         # _quarantine.jsonl, _manifest.json

`convert_archive` runs the three steps in one process; `ray_jobs/convert.py` runs `convert_shard`
as one Ray task per group of pairs.

Bad input never loses good data and never stops the run: a pair with a missing band file, an
unreadable or truncated GeoTIFF, a wrong shape or dtype, NaN/inf pixels, unreadable metadata or an
absent S1/S2 partner goes to `_quarantine.jsonl` (one JSON object per line: patch_id, s1_patch_id,
reason, path) and is counted in the manifest; every other pair of its group is converted.

Exclusions. Pairs named by `exclude_lists` (BigEarthNet v1.0's published snow and cloud lists, or
any list of S2/S1 patch names) or, with `exclude_flagged`, flagged in reBEN's metadata are not
converted: each goes to `_excluded.jsonl` (patch_id, s1_patch_id, split, reason, source) and the
manifest counts them (`excluded`, `excluded_by_source`, and per list its names, matches and names
matching no pair of the archive).

Resume. Pairs are put in a fixed pseudo-random order (a hash of the S2 patch id, see `shard_order`)
and cut into groups of `shard_size`; group i always becomes
`part-{i:05d}.parquet`, and its footer records a hash of the group's pair names. A rerun keeps
every finished shard whose hash matches, deletes leftover temporary files (which were never
visible under a shard name), converts only the missing shards and rewrites the manifest from all
shard footers, so no row is ever duplicated. A shard whose hash does not match means the archive or
`--shard-size` changed: the run stops and asks for a fresh output directory.

One converter per output directory: a conversion holds `OUT/.convert.lock` (`conversion_lock`) from
planning to the manifest, so a second one on the same `--out` is refused instead of deleting the
first one's temporary shards; a lock left by a converter that died is taken over.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hqjepa.data.bigearthnet import ArchiveScan, BadPatch, PairRecord, load_pair, scan_archive
from hqjepa.data.exclusions import EXCLUDED, ExclusionResult, apply_exclusions, read_exclude_list
from hqjepa.data.shards import (
    BANDS,
    MANIFEST,
    NO_SPLIT,
    QUARANTINE,
    SCHEMA_VERSION,
    ShardError,
    finish_moments,
    is_temporary,
    merge_moments,
    moments,
    read_shard_meta,
    rows_to_table,
    shard_name,
    write_json_atomic,
    write_shard,
)

CONVERT_LOCK = ".convert.lock"  # held by the live conversion into a directory

# Pairs per shard. Ray Data reads one shard as one task and one block, and pays per block on both
# sides (the read task's start, its stats and object-store entry; the iterator's bookkeeping per
# block), so the stream's CPU per pair falls with the shard size: 1.36x the pairs per core at 1024
# than at 256 in one benchmark run, 1.05x in another (docs/performance.md). The cost: a conversion
# task holds its group in memory (peak RSS 0.98 GB at 1024 pairs, 0.56 GB at 256), and a resume
# redoes whole shards.
DEFAULT_SHARD_SIZE = 1024


@dataclass(frozen=True)
class ShardTask:
    """One group of pairs that becomes one shard; picklable, the unit of work of a Ray task."""

    index: int
    path: str
    pairs: tuple[PairRecord, ...]
    group_hash: str


@dataclass
class ShardResult:
    """What converting (or finding already converted) one shard gave: its file, row count, size,
    group hash, quarantined pairs, per-split per-band moments and split counts."""

    index: int
    file: str
    rows: int
    bytes: int
    group_hash: str
    quarantine: list[dict]
    stats: dict  # split -> band -> [n, mean, M2]
    split_counts: dict
    seconds: float = 0.0
    reused: bool = False


@dataclass
class ConversionPlan:
    """The outcome of `plan_conversion`: the archive scan, every shard task, the shards already done
    (hash-checked), the tasks still pending and the leftover temporary files removed."""

    archive: str
    out: str
    layout: str
    shard_size: int
    scan: ArchiveScan
    tasks: list[ShardTask]
    done: list[ShardResult] = field(default_factory=list)
    pending: list[ShardTask] = field(default_factory=list)
    removed_temporaries: list[str] = field(default_factory=list)
    exclusions: ExclusionResult | None = None  # pairs left out by exclude lists or quality flags


@dataclass
class Summary:
    """Totals of a finished conversion: pairs converted and quarantined, shards (all and new), bytes, seconds."""

    converted: int
    quarantined: int
    shards: int
    new_shards: int
    bytes: int
    seconds: float
    excluded: int = 0

    @property
    def line(self) -> str:
        """One-line human summary: pairs converted, quarantined and (when any) excluded."""
        line = f"converted {self.converted} pairs, quarantined {self.quarantined}"
        return line + (f", excluded {self.excluded}" if self.excluded else "")


def group_hash(pairs: Iterable[PairRecord]) -> str:
    """SHA-1 over the group's `patch_id,s1_patch_id` lines, in order: identifies the pairs a shard covers."""
    h = hashlib.sha1()
    for p in pairs:
        h.update(f"{p.patch_id},{p.s1_patch_id}\n".encode())
    return h.hexdigest()


def _result_from_meta(task: ShardTask, meta: dict, size: int) -> ShardResult:
    return ShardResult(
        index=task.index,
        file=Path(task.path).name,
        rows=meta["rows"],
        bytes=size,
        group_hash=meta["group_hash"],
        quarantine=meta["quarantine"],
        stats=meta["stats"],
        split_counts=meta["split_counts"],
        reused=True,
    )


def shard_order(pair: PairRecord) -> bytes:
    """Sort key that spreads pairs over shards: a hash of the S2 patch id. Archive order (patch id)
    would put one tile and date in each shard, so a training batch drawn through a shard-sized
    shuffle buffer would see one place and one day; hashed order is fixed (resume still finds its
    groups) but every shard is a spatially and temporally mixed sample of the archive."""
    return hashlib.blake2b(pair.patch_id.encode(), digest_size=8).digest()


def plan_conversion(
    archive: str | Path,
    out: str | Path,
    layout: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    exclude_lists: Sequence[str | Path] = (),
    exclude_flagged: bool = False,
) -> ConversionPlan:
    """Scan the archive, group its pairs into shards and find which shards a previous run finished.

    exclude_lists: files of patch names to leave out; exclude_flagged: leave out reBEN's pairs
    flagged for seasonal snow or cloud/shadow (`hqjepa.data.exclusions`). Excluded pairs are not
    converted and are recorded with their reason in `_excluded.jsonl` by `finalise`."""
    if shard_size < 1:
        raise ValueError(f"shard_size = {shard_size}: must be at least 1")
    lists = [read_exclude_list(p) for p in exclude_lists]  # a bad list fails before any work
    scan = scan_archive(archive, layout)
    exclusions = apply_exclusions(scan, lists, exclude_flagged)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = ConversionPlan(
        archive=str(archive),
        out=str(out),
        layout=scan.layout,
        shard_size=shard_size,
        scan=scan,
        tasks=[],
        exclusions=exclusions,
    )
    for p in out.iterdir():  # leftovers of an interrupted run: never visible as shards, safe to drop
        if is_temporary(p.name):
            p.unlink()
            plan.removed_temporaries.append(p.name)
    pairs = sorted(exclusions.pairs, key=shard_order)
    for i, start in enumerate(range(0, len(pairs), shard_size)):
        group = tuple(pairs[start : start + shard_size])
        plan.tasks.append(ShardTask(index=i, path=str(out / shard_name(i)), pairs=group, group_hash=group_hash(group)))
    known = {Path(t.path).name for t in plan.tasks}
    strays = sorted(p.name for p in out.glob("part-*.parquet") if p.name not in known)
    if strays:
        raise ShardError(
            f"{out}: holds shards {strays[:3]} that this archive and --shard-size would not write; "
            "use a fresh output directory"
        )
    for task in plan.tasks:
        path = Path(task.path)
        if not path.exists():
            plan.pending.append(task)
            continue
        try:
            meta = read_shard_meta(path)
        except ShardError:
            path.unlink()  # damaged after it was written: convert its group again
            plan.pending.append(task)
            continue
        if meta.get("group_hash") != task.group_hash:
            raise ShardError(
                f"{path}: was written for a different group of pairs (the archive, --shard-size or the "
                f"exclusions changed since the previous run); use a fresh output directory"
            )
        plan.done.append(_result_from_meta(task, meta, path.stat().st_size))
    return plan


def convert_shard(task: ShardTask) -> ShardResult:
    """Read every pair of the group, quarantine the bad ones, write the shard atomically."""
    import rasterio

    t0 = time.perf_counter()
    rows, quarantine = [], []
    # GDAL would list each patch folder on every open to look for sidecar files; BigEarthNet has none
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for rec in task.pairs:
            try:
                data = load_pair(rec)
            except BadPatch as e:
                quarantine.append(
                    {"patch_id": rec.patch_id, "s1_patch_id": rec.s1_patch_id, "reason": e.reason, "path": e.path}
                )
                continue
            except Exception as e:  # noqa: BLE001 - bad input must not stop the run; keep the evidence
                quarantine.append(
                    {
                        "patch_id": rec.patch_id,
                        "s1_patch_id": rec.s1_patch_id,
                        "reason": f"unexpected {type(e).__name__}: {e}",
                        "path": rec.s2_dir,
                    }
                )
                continue
            rows.append(
                {
                    "patch_id": rec.patch_id,
                    "s1_patch_id": rec.s1_patch_id,
                    "split": rec.split,
                    "tile": data.tile,
                    "date": _parse_date(data.date),
                    "country": rec.country,
                    "bands": data.bands,
                    "labels19": data.labels19,
                    "labels43": data.labels43,
                }
            )
    stats: dict[str, dict[str, list[float]]] = {}
    for split in sorted({r["split"] or NO_SPLIT for r in rows}):
        sel = [r for r in rows if (r["split"] or NO_SPLIT) == split]
        stats[split] = {b: moments(np.stack([r["bands"][b] for r in sel])) for b in BANDS}
    split_counts = dict(Counter(r["split"] or NO_SPLIT for r in rows))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "shard_index": task.index,
        "group_hash": task.group_hash,
        "rows": len(rows),
        "pairs_in_group": len(task.pairs),
        "quarantine": quarantine,
        "stats": stats,
        "split_counts": split_counts,
    }
    size = write_shard(task.path, rows_to_table(rows), meta)
    return ShardResult(
        index=task.index,
        file=Path(task.path).name,
        rows=len(rows),
        bytes=size,
        group_hash=task.group_hash,
        quarantine=quarantine,
        stats=stats,
        split_counts=split_counts,
        seconds=time.perf_counter() - t0,
    )


def _parse_date(text: str | None):
    if not text:
        return None
    try:
        return datetime.strptime(text[:10], "%Y-%m-%d").date()
    except ValueError:
        return None


def finalise(plan: ConversionPlan, results: Iterable[ShardResult], seconds: float = 0.0) -> Summary:
    """Write `_quarantine.jsonl` and `_manifest.json` from every shard's result; return the summary."""
    results = sorted(results, key=lambda r: r.index)
    if [r.index for r in results] != [t.index for t in plan.tasks]:
        missing = sorted({t.index for t in plan.tasks} - {r.index for r in results})
        raise ShardError(f"{plan.out}: shards {missing[:5]} are not converted yet; run the conversion again")
    out = Path(plan.out)
    quarantine = list(plan.scan.problems) + [q for r in results for q in r.quarantine]
    tmp = out / f".{QUARANTINE}.tmp"
    tmp.write_text("".join(json.dumps(q) + "\n" for q in quarantine))
    tmp.replace(out / QUARANTINE)
    excluded = plan.exclusions.excluded if plan.exclusions else []
    tmp = out / f".{EXCLUDED}.tmp"
    tmp.write_text("".join(json.dumps(x) + "\n" for x in excluded))
    tmp.replace(out / EXCLUDED)

    merged: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for split, per_band in r.stats.items():
            for key in (split, "all"):
                acc = merged.setdefault(key, {})
                for b, m in per_band.items():
                    acc[b] = merge_moments(acc.get(b, [0.0, 0.0, 0.0]), m)
    split_counts = Counter()
    for r in results:
        split_counts.update(r.split_counts)
    band_stats = {key: {b: finish_moments(m) for b, m in per_band.items()} for key, per_band in merged.items()}
    converted = sum(r.rows for r in results)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "archive": str(Path(plan.archive).resolve()),
        "layout": plan.layout,
        "shard_size": plan.shard_size,
        "pairs": converted,
        "quarantined": len(quarantine),
        "quarantine_reasons": dict(Counter(_reason_kind(q["reason"]) for q in quarantine)),
        "excluded": len(excluded),
        "excluded_split_counts": dict(sorted(Counter(x["split"] or NO_SPLIT for x in excluded).items())),
        **(plan.exclusions.summary() if plan.exclusions else {}),
        "split_counts": dict(sorted(split_counts.items())),
        "bytes": sum(r.bytes for r in results),
        "band_stats": band_stats,
        "shards": [
            {
                "file": r.file,
                "rows": r.rows,
                "bytes": r.bytes,
                "group_hash": r.group_hash,
                "split_counts": r.split_counts,
            }
            for r in results
        ],
    }
    write_json_atomic(out / MANIFEST, manifest)
    return Summary(
        converted=converted,
        quarantined=len(quarantine),
        shards=len(results),
        new_shards=sum(not r.reused for r in results),
        bytes=manifest["bytes"],
        seconds=seconds,
        excluded=len(excluded),
    )


def _reason_kind(reason: str) -> str:
    """'missing band file B05' -> 'missing band file': the reason without its band or detail."""
    for kind in (
        "missing band file",
        "unreadable or truncated GeoTIFF",
        "wrong shape",
        "wrong dtype",
        "non-finite pixels",
        "S2 partner patch absent",
        "S1 partner patch absent",
    ):
        if reason.startswith(kind):
            return kind
    return reason.split(" (")[0]


def convert_archive(
    archive: str | Path,
    out: str | Path,
    layout: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_new_shards: int | None = None,
    progress: bool = True,
    on_shard_done: Callable[[ShardResult], None] | None = None,
    exclude_lists: Sequence[str | Path] = (),
    exclude_flagged: bool = False,
    lock_wait_s: float = 0.0,
) -> Summary | None:
    """Convert in this process (no Ray). Returns None when `max_new_shards` stopped it early.
    Holds `out`'s conversion lock throughout (`conversion_lock`), waiting up to `lock_wait_s` for it."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    with conversion_lock(out, lock_wait_s):
        plan = plan_conversion(archive, out, layout, shard_size, exclude_lists, exclude_flagged)
        todo = plan.pending if max_new_shards is None else plan.pending[:max_new_shards]
        results = list(plan.done)
        with tqdm(
            total=len(plan.tasks), initial=len(plan.done), unit="shard", disable=not progress, desc="convert"
        ) as bar:
            for task in todo:
                result = convert_shard(task)
                results.append(result)
                bar.update(1)
                if on_shard_done is not None:
                    on_shard_done(result)
        if len(results) < len(plan.tasks):
            return None
        return finalise(plan, results, time.perf_counter() - t0)


def conversion_lock(out: str | Path, wait_s: float = 0.0):
    """Take the lock of output directory `out` (`out/.convert.lock`, `hqjepa.runs.lock.FileLock`) and
    return it (held; release it, or use it as a context manager). A conversion holds it from planning
    to the manifest: planning deletes leftover temporary shards, which a second live converter on
    the same `out` would still be writing. LockHeld (one line, naming the holder) if it stays taken
    for `wait_s` seconds; a lock whose holder died is taken over."""
    from hqjepa.runs.lock import lock_for

    Path(out).mkdir(parents=True, exist_ok=True)
    return lock_for(Path(out) / CONVERT_LOCK, what=f"conversion into {out}").acquire(wait_s)
