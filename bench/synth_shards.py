"""Synthetic shards written straight from the scene generator (no GeoTIFFs, no rasterio).

    python -m bench.synth_shards --out DIR [--pairs 2048] [--shard-size 256] [--seed 0] [--workers N]

For a machine that lacks the archive toolchain (the GPU image has no rasterio): the same scenes
`hqjepa synth-bigearthnet` would write as GeoTIFFs (`hqjepa.data.synthetic.render_batch`), stored
as the converter stores pairs (`hqjepa.data.shards`: the current layout, footers with per-band
moments, a manifest with the band statistics), every pair in the `train` split. Shards are
rendered in parallel processes (--workers, default all cores). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hqjepa.data.shards import (
    BANDS,
    MANIFEST,
    SCHEMA_VERSION,
    finish_moments,
    merge_moments,
    moments,
    rows_to_table,
    shard_name,
    write_json_atomic,
    write_shard,
)
from hqjepa.data.synthetic import render_batch
from hqjepa.provenance import provenance


def write_one(out: str, index: int, start: int, n: int, seed: int) -> dict:
    """Render pairs start..start+n-1 and write shard `index`; returns its manifest entry and moments."""
    batch = render_batch(np.random.default_rng([seed, index]), n)
    bands = {**batch.s2, **batch.s1}
    rows = [
        {
            "patch_id": f"SYNTH_{start + i:07d}",
            "s1_patch_id": f"SYNTH_S1_{start + i:07d}",
            "split": "train",
            "tile": None,
            "date": None,
            "country": None,
            "bands": {b: bands[b][i] for b in BANDS},
            "labels19": batch.labels19[i],
            "labels43": batch.labels43[i],
        }
        for i in range(n)
    ]
    stats = {"train": {b: moments(bands[b]) for b in BANDS}}
    group_hash = hashlib.sha1("\n".join(r["patch_id"] for r in rows).encode()).hexdigest()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "shard_index": index,
        "group_hash": group_hash,
        "rows": n,
        "pairs_in_group": n,
        "quarantine": [],
        "stats": stats,
        "split_counts": {"train": n},
    }
    size = write_shard(Path(out) / shard_name(index), rows_to_table(rows), meta)
    entry = {
        "file": shard_name(index),
        "rows": n,
        "bytes": size,
        "group_hash": group_hash,
        "split_counts": {"train": n},
    }
    return {"entry": entry, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    prov = provenance(None if argv is None else ["-m", __spec__.name, *argv])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=2048)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [
        (str(out), i, s, min(args.shard_size, args.pairs - s), args.seed)
        for i, s in enumerate(range(0, args.pairs, args.shard_size))
    ]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = list(pool.map(write_one, *zip(*jobs, strict=True)))
    merged: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for split, per_band in r["stats"].items():
            for key in (split, "all"):
                acc = merged.setdefault(key, {})
                for b, m in per_band.items():
                    acc[b] = merge_moments(acc.get(b, [0.0, 0.0, 0.0]), m)
    entries = [r["entry"] for r in results]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "archive": "synthetic scenes (bench/synth_shards.py)",
        "layout": "synthetic",
        "shard_size": args.shard_size,
        "pairs": args.pairs,
        "quarantined": 0,
        "quarantine_reasons": {},
        "excluded": 0,
        "split_counts": {"train": args.pairs},
        "bytes": sum(e["bytes"] for e in entries),
        "band_stats": {k: {b: finish_moments(m) for b, m in per.items()} for k, per in merged.items()},
        "shards": entries,
    }
    for name in ("_quarantine.jsonl", "_excluded.jsonl"):
        (out / name).write_text("")
    write_json_atomic(out / MANIFEST, manifest)
    print(
        json.dumps(
            {
                "bench": "synth_shards",
                "out": str(out),
                "pairs": args.pairs,
                "shards": len(entries),
                "kb_per_pair": round(manifest["bytes"] / args.pairs / 1000, 1),
                "seconds": round(time.perf_counter() - t0, 1),
                **prov,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
