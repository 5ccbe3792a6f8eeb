"""Convert a BigEarthNet S1/S2 archive (v1.0 or v2.0 layout) into zstd Parquet shards with Ray.

    python ray_jobs/convert.py --archive /data/BigEarthNet --out /data/ben-shards [--layout auto|v1|v2]
                               [--shard-size 256] [--workers N] [--max-new-shards K]

The story of a run:
1. scan the archive and group its S1/S2 pairs into shards (`hqjepa.data.convert.plan_conversion`);
   shards finished by an earlier run are kept, leftover temporary files are deleted;
2. one Ray task per missing shard reads its pairs with rasterio, quarantines bad ones and writes the
   shard atomically (`convert_shard`); a progress bar advances as tasks finish;
3. the manifest and `_quarantine.jsonl` are written from all shard footers (`finalise`), and one
   line says how many pairs were converted and how many quarantined.

Ray: `ray_jobs.runtime.start_ray` joins the cluster named by RAY_ADDRESS; otherwise a local instance
with one CPU per core starts. The output directory must be reachable from every node (shared storage).
Interrupting the run loses at most the shards in flight: run the same command again to resume.
"""

from __future__ import annotations

import argparse
import sys
import time

from ray_jobs.runtime import start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
from tqdm import tqdm

from hqjepa.data.bigearthnet import NotBigEarthNetError
from hqjepa.data.convert import convert_shard, finalise, plan_conversion
from hqjepa.data.shards import ShardError


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        plan = plan_conversion(args.archive, args.out, args.layout, args.shard_size)
    except (NotBigEarthNetError, ShardError, ValueError) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{plan.layout} archive: {len(plan.scan.pairs)} pairs in {len(plan.tasks)} shards "
        f"({len(plan.done)} already converted), {len(plan.scan.problems)} pairs unpaired"
    )

    todo = plan.pending if args.max_new_shards is None else plan.pending[: args.max_new_shards]
    results = list(plan.done)
    if todo:
        start_ray(log_to_driver=False)  # joins a caller's Ray (a test, a notebook) or RAY_ADDRESS
        limit = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=2)(convert_shard)
        queue, running = list(todo), []
        with tqdm(total=len(plan.tasks), initial=len(plan.done), unit="shard", desc="convert") as bar:
            while queue or running:
                while queue and len(running) < limit:  # bounded in flight: large archives, small memory
                    running.append(remote.remote(queue.pop(0)))
                finished, running = ray.wait(running, num_returns=1)
                result = ray.get(finished[0])
                results.append(result)
                bar.set_postfix(pairs=sum(r.rows for r in results), quarantined=sum(len(r.quarantine) for r in results))
                bar.update(1)
    if len(results) < len(plan.tasks):
        print(f"stopped after {len(todo)} new shards ({len(results)}/{len(plan.tasks)} done); run again to continue")
        return 0
    summary = finalise(plan, results, time.perf_counter() - t0)
    print(summary.line)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--archive",
        required=True,
        help="archive root (v1: BigEarthNet-v1.0/ + BigEarthNet-S1-v1.0/; "
        "v2: BigEarthNet-S2/ + BigEarthNet-S1/ + metadata.parquet)",
    )
    p.add_argument("--out", required=True, help="shard directory (created; reruns resume)")
    p.add_argument("--layout", choices=("auto", "v1", "v2"), default="auto")
    p.add_argument(
        "--shard-size",
        type=int,
        default=256,
        help="pairs per shard (~180 KB per pair on disk); keep >= 256, Ray Data pays a per-file cost every epoch",
    )
    p.add_argument("--workers", type=int, default=None, help="concurrent conversion tasks (default: Ray's CPUs)")
    p.add_argument(
        "--max-new-shards",
        type=int,
        default=None,
        help="stop after converting this many new shards (convert a big archive in installments)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
