"""The paper's experiments as one command each: pretrain every row of a table, evaluate it on GeoBench, write the table.

    python ray_jobs/reproduce.py table1|table2|table3 [--config configs/paper.yaml] [--seeds 3]
        [--tasks all|m-eurosat,...] [--protocol linear,finetune] [--benchmark-dir DIR]
        [--set section.key=value ...] [--eval-set section.key=value ...] [--rows NAME|N,...]
        [--workers 4 --gpus-per-worker 1] [--out runs/reproduce/TABLE] [--dry-run]

The tables (the paper's numbers are in hqjepa/paper_results.py, with what its text lost):
- table1: HQ-JEPA with the config as it is (the paper's Table 1 row "HQ-JEPA").
- table2: the objective ablation, the paper's eight rows: L_pred alone and L_pred plus every subset of
  {L_cm, L_sig, L_fqs}, a term switched off by setting its weight (loss.w_cm, loss.w_sig, loss.w_fqs)
  to 0 and on at the config's value; and a ninth row of ours, the full objective with the
  non-collapsing FQS term (loss.fqs_mode: siamese, docs/method.md Sec. 7).
- table3: the points of tune_spaces/paper_table3.yaml (13 configurations; the paper's 16 rows repeat
  the default once per factor).

The story of a run:
1. The config (--config, --set) and the plan are checked before Ray starts: one run per (row, seed),
   every row of a seed with the same optim.seed, so rows pair by seed. --dry-run prints each planned
   run as a JSON line {"table", "row", "seed", "overrides"} and then the cost estimate, and stops.
2. Ray starts embedded, or joins the cluster named by RAY_ADDRESS.
3. Each run pretrains with ray_jobs/pretrain.py's `pretrain` (Ray Train) under OUT/runs/<row>-seed<N>;
   as soon as it is exported, its GeoBench jobs go out as Ray tasks (ray_jobs/evaluate.py's
   `submit_jobs`: one per task, protocol and seed, linear probing from one feature extraction),
   with the run's seed as the probe's seed; they run beside the next pretraining.
4. When every job is in, OUT/results.json (plan, records, per-cell values, provenance) and
   OUT/table.md: one line per row with LP and FT side by side per task, mean +- std of the test
   score over seeds, and the paper's line beside it. Exit status 0, 3 when some job failed (the
   table shows what finished), 2 on bad usage.

Cost: GPU-hours from the measured rate of 2,084 samples/s per H200 for configs/paper.yaml (batch 512,
bf16; docs/performance.md), CPU-hours for a 2-core CPU like the development machine from the two
training steps measured there (configs/paper.yaml batch 8: 2.94 samples/s; configs/tiny.yaml batch 16:
35.5 samples/s), interpolated in width^2 x depth for other models. Samples = steps x global batch per
run; evaluation is not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ray_jobs.runtime import ROOT, start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
import yaml

from hqjepa import paper_results
from hqjepa.cli import ArgumentParser
from hqjepa.config import Config, ConfigError, apply_overrides, load_config, parse_override
from hqjepa.eval.config import apply_eval_overrides, eval_config_from_dict, load_eval_config
from hqjepa.eval.default_benchmark import benchmark_or_default
from hqjepa.eval.geobench import parse_tasks
from hqjepa.eval.runner import PROTOCOLS
from hqjepa.eval.safe_pickle import GeoBenchFormatError
from hqjepa.tuning.space import load_space
from ray_jobs.evaluate import gather, submit_jobs
from ray_jobs.pretrain import plan_steps, pretrain

TABLES = ("table1", "table2", "table3")
TABLE3_SPACE = ROOT / "tune_spaces" / "paper_table3.yaml"
NONCOLLAPSE_MODE = "siamese"
NINTH_ROW = f"L_pred + L_cm + L_sig + L_fqs (loss.fqs_mode: {NONCOLLAPSE_MODE})"
WEIGHTS = ("loss.w_cm", "loss.w_sig", "loss.w_fqs")
TERMS = {"cm": "loss.w_cm", "sig": "loss.w_sig", "fqs": "loss.w_fqs"}
TABLE3_KEYS = {
    "Encoder Depth": "model.depth",
    "Number of Target Views": "mask.num_targets",
    "Target Scale": "mask.target_scale",
    "Context Scale": "mask.context_scale",
}
PAPER_TRAIN_PAIRS = 237_871  # the paper's training set (docs/design.md), when no shards are at hand

# measured rates (docs/performance.md): samples per second
GPU_RATE = 2084.0  # one H200, configs/paper.yaml, batch 512, bf16
CPU_RATES = ((384**2 * 8, 8 / 2.719), (96**2 * 4, 16 / 0.451))  # (width^2 x depth, 2-core CPU rate): paper, tiny


# --- the plan (no Ray) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One pretraining of a table: its row, its seed and the config overrides that make it."""

    table: str
    row: str
    seed: int
    overrides: dict

    @property
    def name(self) -> str:
        """The run's directory under OUT/runs: the row as a file name, then the seed."""
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", self.row).strip("_")
        return f"{slug}-seed{self.seed}"


def table_rows(table: str, cfg: Config) -> list[tuple[str, dict]]:
    """(row name, config overrides) for every row of the table, before seeds."""
    weights = {k: float(getattr(cfg.loss, k.split(".")[1])) for k in WEIGHTS}
    if table == "table1":
        return [("HQ-JEPA", weights)]
    if table == "table2":
        off = [k for k, v in weights.items() if v <= 0]
        if off:
            raise ConfigError(f"table2 switches terms on at the config's weights: {', '.join(off)} must be > 0")
        rows = [
            (r.name, {w: (weights[w] if term in r.objectives else 0.0) for term, w in TERMS.items()})
            for r in paper_results.TABLE2
        ]
        return rows + [(NINTH_ROW, {**weights, "loss.fqs_mode": NONCOLLAPSE_MODE})]
    if table == "table3":
        space = load_space(TABLE3_SPACE, cfg)
        return [(point.name, {**weights, **point.overrides}) for point in space.grid]
    raise ConfigError(f"table {table!r}: one of {', '.join(TABLES)}")


def select_rows(rows: list[tuple[str, dict]], wanted: str | None) -> list[tuple[str, dict]]:
    """--rows: names (as the dry run prints them) or 1-based positions, comma-separated."""
    if not wanted:
        return rows
    out = []
    for item in (w.strip() for w in wanted.split(",") if w.strip()):
        if item.isdigit() and 1 <= int(item) <= len(rows):
            chosen = rows[int(item) - 1]
        else:
            chosen = next((r for r in rows if r[0] == item), None)
            if chosen is None:
                raise ConfigError(f"--rows {item!r}: no such row; rows: {', '.join(r[0] for r in rows)}")
        if chosen not in out:
            out.append(chosen)
    return out


def plan_runs(table: str, cfg: Config, seeds: int, rows: str | None = None) -> list[PlannedRun]:
    """Every (row, seed) run, seed-major so that a seed's rows finish together (paired by optim.seed)."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be >= 1")
    chosen = select_rows(table_rows(table, cfg), rows)
    runs = [
        PlannedRun(table, name, seed, {**overrides, "optim.seed": seed})
        for seed in range(seeds)
        for name, overrides in chosen
    ]
    for run in runs:
        apply_overrides(cfg, run.overrides)  # every run's config is valid before anything starts
    return runs


def training_pairs(cfg: Config, cache_dir: Path) -> tuple[int, str]:
    """Training rows a run of `cfg` sees and where the number comes from (no data is written)."""
    from hqjepa.data.shards import load_manifest

    if cfg.data.source == "synthetic":
        manifest = cache_dir / f"synthetic-{cfg.data.synthetic_pairs}-seed{cfg.optim.seed}" / "shards"
        where = "synthetic shards"
    else:
        manifest, where = cfg.data.shards, f"{cfg.data.shards}/_manifest.json"
    try:
        counts = load_manifest(manifest)
        rows = counts["split_counts"].get(cfg.data.split, 0) if cfg.data.split else counts["pairs"]
        return int(rows), where
    except Exception:  # noqa: BLE001 - no shards yet: estimate
        if cfg.data.source == "synthetic":  # the synthetic writer puts 70 % of the pairs in train
            return int(0.7 * cfg.data.synthetic_pairs), f"{cfg.data.synthetic_pairs} synthetic pairs (70 % train)"
        return PAPER_TRAIN_PAIRS, "the paper's 237,871 (no manifest readable)"


def cpu_rate(cfg: Config) -> float:
    """Samples/s of one training process on a 2-core CPU, log-log interpolated in width^2 x depth."""
    (c_paper, r_paper), (c_tiny, r_tiny) = CPU_RATES
    slope = math.log(r_tiny / r_paper) / math.log(c_paper / c_tiny)
    cost = cfg.model.embed_dim**2 * cfg.model.depth
    return r_paper * (c_paper / cost) ** slope


def estimate(runs: list[PlannedRun], base: Config, workers: int, cache_dir: Path) -> dict:
    """Samples, steps, GPU-hours (H200 rate) and CPU-hours (2-core rate) of the planned pretrainings."""
    samples = cpu_seconds = 0.0
    steps, sources = 0, set()
    for run in runs:
        cfg = apply_overrides(base, run.overrides)
        pairs, source = training_pairs(cfg, cache_dir)
        sources.add(source)
        _, n = plan_steps(cfg, pairs, workers)
        s = n * cfg.optim.batch_size * workers * cfg.optim.accumulation
        steps += n
        samples += s
        cpu_seconds += s / cpu_rate(cfg)
    return {
        "runs": len(runs),
        "steps": steps,
        "samples": int(samples),
        "gpu_hours": round(samples / GPU_RATE / 3600, 2),
        "cpu_hours": round(cpu_seconds / 3600, 2),
        "gpu_rate": f"{GPU_RATE:g} samples/s per H200 (configs/paper.yaml, batch 512, bf16)",
        "cpu_rate": "2-core CPU, interpolated from configs/paper.yaml (2.94 samples/s) and configs/tiny.yaml (35.5)",
        "training_pairs": sorted(sources),
        "evaluation": "not counted",
    }


# --- the table (no Ray) -----------------------------------------------------------------------------


def cells(records: list[dict]) -> dict:
    """{row: {task: {protocol: {"values": [test per seed], "mean", "std", "n"}}}} of the finished jobs."""
    out: dict = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        cell = out.setdefault(r["row"], {}).setdefault(r["task"], {}).setdefault(r["protocol"], {"values": []})
        cell["values"].append(float(r["test"]))
    for by_task in out.values():
        for by_protocol in by_task.values():
            for cell in by_protocol.values():
                v = cell["values"]
                cell.update(n=len(v), mean=statistics.fmean(v), std=statistics.stdev(v) if len(v) > 1 else 0.0)
    return out


def paper_row_for(table: str, row: str, base: Config) -> list[tuple[str, paper_results.PaperRow | None]]:
    """The paper's line(s) to print beside our row: (label, paper row or None)."""
    if table == "table1":
        return [("HQ-JEPA", paper_results.row("table1", "HQ-JEPA"))]
    if table == "table2":
        return [(row, paper_results.row("table2", row) if row != NINTH_ROW else None)]
    space = load_space(TABLE3_SPACE, base)  # table3: every paper row whose setting is this point
    point = space.point(row)
    matches = []
    for paper in paper_results.TABLE3:
        key = TABLE3_KEYS[paper.group]
        value = [float(x) for x in paper.value.split("–")] if "–" in paper.value else float(paper.value)
        have = point.overrides[key]
        if (list(have) if isinstance(have, list | tuple) else float(have)) == value:
            matches.append((paper.name, paper))
    return matches or [(row, None)]


def fmt(cell: dict | None) -> str:
    if not cell:
        return "–"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}" if cell["n"] > 1 else f"{cell['mean']:.2f}"


def table_markdown(table: str, rows: list[str], tasks: list[str], protocols: list[str], got: dict, base: Config) -> str:
    """Our line per row (mean ± std over seeds, n in results.json) and the paper's line beside it."""
    short = {"linear": "LP", "finetune": "FT"}
    header = ["row", "source"] + [f"{t} {short[p]}" for t in tasks for p in protocols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join([row, "ours"] + [fmt(got.get(row, {}).get(t, {}).get(p)) for t in tasks for p in protocols])
            + " |"
        )
        for label, paper in paper_row_for(table, row, base):
            scores = [
                paper.score(t, p) if paper and t in paper_results.TASKS else None for t in tasks for p in protocols
            ]
            name = label if label != row else ""
            lines.append("| " + " | ".join([name, "paper"] + ["–" if s is None else f"{s:.2f}" for s in scores]) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    out: Path, table: str, runs, records, tasks, protocols, base: Config, meta: dict, argv: list[str] | None = None
) -> dict:
    """OUT/results.json and OUT/table.md; returns their paths. `argv`: the command's arguments, for
    the provenance (None: this process's own)."""
    from hqjepa.provenance import provenance

    out.mkdir(parents=True, exist_ok=True)
    got = cells(records)
    rows = list(dict.fromkeys(r.row for r in runs))
    title = f"{table}: test scores (%), mean ± std over {len({r.seed for r in runs})} seed(s); paper: as reported"
    md = f"# {title}\n\n" + table_markdown(table, rows, tasks, protocols, got, base)
    (out / "table.md").write_text(md)
    results = {
        **meta,
        "table": table,
        "runs": [asdict(r) for r in runs],
        "records": records,
        "cells": got,
        **provenance(None if argv is None else ["ray_jobs/reproduce.py", *argv]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return {"table": str(out / "table.md"), "results": str(out / "results.json")}


# --- the driver -------------------------------------------------------------------------------------


def run_table(args: argparse.Namespace, base: Config, runs: list[PlannedRun], pairs, bench: Path, eval_cfg: dict):
    """Steps 2-3: pretrain each run in turn, send its GeoBench jobs out as soon as it is exported,
    then wait for every job; returns the records, each with its run's row and seed."""
    started_here = start_ray(log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    out = Path(args.out).resolve()
    pending: dict = {}
    run_of: dict[str, PlannedRun] = {}
    for run in runs:
        cfg = apply_overrides(base, run.overrides)
        summary = pretrain(
            cfg,
            storage=str(out / "runs"),
            name=run.name,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cache_dir=Path(args.cache_dir),
            title=f"{run.table} {run.row} seed {run.seed}",
        )
        export = str(summary["export"])
        run_of[export] = run
        config = {**eval_cfg, "run": {**eval_cfg["run"], "seeds": [run.seed]}}
        num_gpus = args.gpu_fraction if gpus else 0
        pending.update(submit_jobs(["checkpoint"], pairs, [run.seed], config, export, str(bench), num_gpus=num_gpus))
    records = gather(pending, echo=True)
    for r in records:
        run = run_of[str(r["checkpoint"])]
        r.update(row=run.row, pretrain_seed=run.seed)
    if started_here:
        ray.shutdown()
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = load_config(args.config, dict(parse_override(s) for s in args.set))
        runs = plan_runs(args.table, base, args.seeds, args.rows)
        tasks = parse_tasks(args.tasks)
        protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
        if not protocols or any(p not in PROTOCOLS for p in protocols):
            raise ConfigError(f"--protocol {args.protocol}: choose from {', '.join(PROTOCOLS)}")
        protocols = [p for p in PROTOCOLS if p in protocols]
        if args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: must be >= 1")
        if args.dry_run:
            for run in runs:
                print(json.dumps({"table": run.table, "row": run.row, "seed": run.seed, "overrides": run.overrides}))
            cost = estimate(runs, base, args.workers, Path(args.cache_dir))
            print(json.dumps({"estimate": cost}))
            print(
                f"reproduce: {cost['runs']} pretrainings, {cost['samples']:,} samples: {cost['gpu_hours']:,} "
                f"H200-hours at {GPU_RATE:g} samples/s, or {cost['cpu_hours']:,} hours on a 2-core CPU",
                file=sys.stderr,
            )
            return 0
        raw = apply_eval_overrides(load_eval_config(args.eval_config).to_dict(), args.eval_set, "--eval-set")
        eval_cfg = eval_config_from_dict(raw).to_dict()
        bench = benchmark_or_default(args.benchmark_dir, args.cache_dir, announce=lambda m: print(f"reproduce: {m}"))
    except (ConfigError, GeoBenchFormatError, ValueError, yaml.YAMLError) as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    pairs = [(t, p) for t in tasks for p in protocols]
    records = run_table(args, base, runs, pairs, Path(bench), eval_cfg)
    meta = {
        "config": str(Path(args.config).resolve()),
        "sets": args.set,
        "eval_config": eval_cfg,
        "benchmark_dir": str(bench),
        "tasks": tasks,
        "protocols": protocols,
        "seconds": round(time.time() - t0, 1),
    }
    paths = write_results(Path(args.out), args.table, runs, records, tasks, protocols, base, meta, argv)
    print(Path(paths["table"]).read_text())
    failed = sum(r.get("status") != "ok" for r in records)
    print(json.dumps({"runs": len(runs), "jobs": len(records), "failed": failed, **paths}))
    return 3 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=TABLES)
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"), help="the base run config")
    p.add_argument("--seeds", type=int, default=3, help="pretraining seeds 0..N-1 per row (optim.seed)")
    p.add_argument("--rows", default=None, help="only these rows: names as --dry-run prints them, or 1-based positions")
    p.add_argument("--tasks", default="all", help="all, or a comma list of GeoBench task names")
    p.add_argument("--protocol", default="linear,finetune", help="comma list of: linear, finetune")
    p.add_argument(
        "--benchmark-dir",
        default=None,
        help="GeoBench root (default: $GEO_BENCH_DIR, else a small synthetic GeoBench written once under --cache-dir)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a base-config value for every run, e.g. train.max_steps=100 (a short budget)",
    )
    p.add_argument("--eval-config", default=str(ROOT / "configs" / "eval.yaml"))
    p.add_argument(
        "--eval-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override an eval-config value, e.g. linear.epochs=20",
    )
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per pretraining")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--gpu-fraction", type=float, default=0.25, help="GPU share per evaluation task when GPUs exist")
    p.add_argument(
        "--out", default=None, help="where runs/, results.json and table.md go (default: runs/reproduce/TABLE)"
    )
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "data"), help="synthetic shards and benchmark cache")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and the cost estimate; run nothing")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(ROOT / "runs" / "reproduce" / args.table)
    return args


if __name__ == "__main__":
    raise SystemExit(main())
