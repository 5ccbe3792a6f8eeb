"""Convert a BigEarthNet S1/S2 archive (v1.0 or v2.0 layout) into zstd Parquet shards with Ray.

    python ray_jobs/convert.py --archive /data/BigEarthNet --out /data/ben-shards [--layout auto|v1|v2]
                               [--shard-size 1024] [--workers N] [--max-new-shards K]
                               [--exclude-list FILE ...] [--exclude-flagged]

The story of a run:
1. scan the archive and group its S1/S2 pairs into shards (`hqjepa.data.convert.plan_conversion`);
   shards finished by an earlier run are kept, leftover temporary files are deleted; pairs named
   by an `--exclude-list` file or (reBEN) flagged for snow or cloud with `--exclude-flagged` are
   left out and recorded with their reason in `_excluded.jsonl`;
2. one Ray task per missing shard reads its pairs with rasterio, quarantines bad ones and writes the
   shard atomically (`convert_shard`); a progress bar advances as tasks finish;
3. the manifest and `_quarantine.jsonl` are written from all shard footers (`finalise`), and one
   line says how many pairs were converted and how many quarantined.

Ray: `ray_jobs.runtime.start_ray` joins the cluster named by RAY_ADDRESS; otherwise a local instance
with one CPU per core starts. The output directory must be reachable from every node (shared storage).
Interrupting the run loses at most the shards in flight: run the same command again to resume.
One converter per output directory: a second one on the same --out is refused in one line (exit 2)
while the first lives (`OUT/.convert.lock`); the lock of one that died is taken over.
"""

from __future__ import annotations

import argparse
import sys
import time

from ray_jobs.runtime import start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
from tqdm import tqdm

from hqjepa.cli import ArgumentParser
from hqjepa.data.bigearthnet import NotBigEarthNetError
from hqjepa.data.convert import DEFAULT_SHARD_SIZE, conversion_lock, convert_shard, finalise, plan_conversion
from hqjepa.data.exclusions import EXCLUDED
from hqjepa.data.shards import ShardError
from hqjepa.runs.lock import LockHeld


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lock = conversion_lock(args.out)  # one converter per --out: planning deletes temporary shards
    except LockHeld as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    try:
        return convert(args)
    finally:
        lock.release()


def convert(args: argparse.Namespace) -> int:
    """Steps 1-3 of the module docstring, holding the output directory's lock."""
    t0 = time.perf_counter()
    try:
        plan = plan_conversion(
            args.archive, args.out, args.layout, args.shard_size, args.exclude_list or (), args.exclude_flagged
        )
    except (NotBigEarthNetError, ShardError, ValueError) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{plan.layout} archive: {len(plan.scan.pairs)} pairs in {len(plan.tasks)} shards "
        f"({len(plan.done)} already converted), {len(plan.scan.problems)} pairs unpaired"
    )
    _report_exclusions(plan)

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


def _report_exclusions(plan) -> None:
    ex = plan.exclusions
    if ex is None or not (ex.excluded or ex.lists or ex.flagged):
        return
    sources = ", ".join(f"{k}: {v}" for k, v in ex.summary()["excluded_by_source"].items()) or "none matched"
    print(f"excluding {len(ex.excluded)} pairs ({sources}); see {EXCLUDED}")
    for use in ex.lists:
        if use.unknown:
            shown = ", ".join(use.unknown[:3]) + (" ..." if len(use.unknown) > 3 else "")
            print(f"convert: warning: {use.path}: {len(use.unknown)} of {use.names} names match no pair here ({shown})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
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
        default=DEFAULT_SHARD_SIZE,
        help=f"pairs per shard (~205 KB per pair on disk; default {DEFAULT_SHARD_SIZE}): Ray Data pays per "
        "shard every epoch, so smaller shards cost more CPU per pair",
    )
    p.add_argument("--workers", type=int, default=None, help="concurrent conversion tasks (default: Ray's CPUs)")
    p.add_argument(
        "--max-new-shards",
        type=int,
        default=None,
        help="stop after converting this many new shards (convert a big archive in installments)",
    )
    p.add_argument(
        "--exclude-list",
        action="append",
        metavar="FILE",
        help="leave out the pairs this file names (one S2 or S1 patch name per line, e.g. BigEarthNet "
        "v1.0's patches_with_seasonal_snow.csv); repeatable; recorded in _excluded.jsonl",
    )
    p.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="v2.0 (reBEN): leave out pairs whose metadata sets contains_seasonal_snow or "
        "contains_cloud_or_shadow; recorded in _excluded.jsonl",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
