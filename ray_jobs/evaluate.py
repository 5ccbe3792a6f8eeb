"""Evaluate an encoder on GeoBench: every (task, protocol, seed) is one Ray task.

    python ray_jobs/evaluate.py --checkpoint runs/tiny/export.pt [--tasks all|m-eurosat,...]
        [--protocol linear,finetune] [--seeds 3] [--baseline random-init] [--benchmark-dir DIR]
        [--out DIR] [--eval-config configs/eval.yaml] [--config configs/tiny.yaml]
        [--set linear.epochs=20 ...] [--gpu-fraction 0.25]

The story of a run:
1. read the eval settings (`configs/eval.yaml`, `--set` overrides) and find GeoBench
   (`--benchmark-dir`, else $GEO_BENCH_DIR);
2. per encoder (the checkpoint; `--baseline random-init` adds the same architecture, randomly
   initialised) and task: linear probing extracts frozen features once (one Ray task) and trains one
   head per seed (one Ray task each, fed the features through the object store); fine-tuning is one
   Ray task per seed. Each task asks for 1 CPU and, when the cluster has GPUs, `--gpu-fraction` GPU;
3. gather: a job that failed (missing bands, corrupt sample file, checkpoint that does not match the
   model, ...) comes back as a record naming it and the cause; the others are unaffected;
4. write OUT/results.json, OUT/table.md (the paper's Table 1 layout, mean +- std over seeds) and
   OUT/results.png, and print the table;
5. with --mlflow URI (or $MLFLOW_TRACKING_URI): one MLflow run (experiment --mlflow-experiment,
   default "hqjepa") with the eval config as params (keys as --set takes them, "linear.epochs"; the
   run's settings under "evaluate."), each encoder/task/protocol's mean, std, valid_mean and n as
   metrics ("checkpoint/m-eurosat/linear/mean") and results.json, table.md, results.png as artifacts.
Exit status: 0 when every job finished, 3 when some failed (the report names them), 2 on bad usage.
`--config` names the model config the checkpoint must match (refused with a clear error otherwise);
it also gives the random-init baseline its architecture when the checkpoint cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ray_jobs.runtime import ROOT, start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
import yaml

from hqjepa.cli import ArgumentParser
from hqjepa.config import ConfigError
from hqjepa.eval.config import apply_eval_overrides, eval_config_from_dict, load_eval_config
from hqjepa.eval.default_benchmark import benchmark_or_default
from hqjepa.eval.geobench import parse_tasks
from hqjepa.eval.report import write_report
from hqjepa.eval.runner import PROTOCOLS, EvalJob, error_record, feature_seeds, run_extract, run_finetune, run_linear
from hqjepa.eval.safe_pickle import GeoBenchFormatError
from hqjepa.runs import storage
from hqjepa.tracking import add_tracking_args, tracking_from_flags


def build_config(args: argparse.Namespace) -> dict:
    """The checked eval config: the YAML file, then --set and --seeds; bad options raise ConfigError."""
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: must be >= 1")
    if not 0 < args.gpu_fraction <= 1:
        raise ConfigError(f"--gpu-fraction {args.gpu_fraction}: must be in (0, 1]")
    raw = apply_eval_overrides(load_eval_config(args.eval_config).to_dict(), args.set)
    if args.seeds is not None:
        raw["run"]["seeds"] = list(range(args.seeds))
    return eval_config_from_dict(raw).to_dict()  # checked


def submit_jobs(
    encoders: list[str],
    pairs: list[tuple[str, str]],
    seeds: list[int],
    config: dict,
    checkpoint: str,
    benchmark_dir: str,
    model_config: str | None = None,
    *,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> dict[ray.ObjectRef, EvalJob]:
    """Step 2 of the module docstring for every encoder and (task, protocol) pair: the Ray tasks, not
    yet waited on (`gather` waits). They are scheduled on the cluster's free resources, never in a
    caller's placement group (a Ray Tune trial's, whose bundle is sized for the trial alone), so a
    search's probes spread over the cluster like an evaluation's."""
    opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "scheduling_strategy": "DEFAULT"}
    extract_remote = ray.remote(run_extract).options(**opts)
    linear_remote = ray.remote(run_linear).options(**opts)
    finetune_remote = ray.remote(run_finetune).options(**opts)

    pending: dict[ray.ObjectRef, EvalJob] = {}
    for encoder in encoders:
        for task, protocol in pairs:

            def job(seed: int, task: str = task, encoder: str = encoder, protocol: str = protocol) -> EvalJob:
                return EvalJob(task, protocol, seed, encoder, checkpoint, benchmark_dir, config, model_config)

            if protocol == "linear":
                extracted: dict[int, ray.ObjectRef] = {}
                for seed, source in feature_seeds(encoder, seeds, config).items():
                    if source not in extracted:
                        extracted[source] = extract_remote.remote(job(source))
                    pending[linear_remote.remote(job(seed), extracted[source])] = job(seed)
            else:
                for seed in seeds:
                    pending[finetune_remote.remote(job(seed))] = job(seed)
    return pending


def gather(pending: dict[ray.ObjectRef, EvalJob], echo: bool = False) -> list[dict]:
    """Step 3: every job's record as it finishes (a worker that died becomes an error record naming
    the job); `echo` prints one JSON line per record."""
    records = []
    refs = list(pending)
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        job = pending[done[0]]
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayError as e:  # a worker that died, not an error inside the job
            record = error_record(job, e)
        records.append(record)
        if echo:
            keys = ("task", "protocol", "encoder", "seed", "status", "test", "error")
            print(json.dumps({k: record.get(k) for k in keys}), flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
        tasks = parse_tasks(args.tasks)
        protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
        bad = [p for p in protocols if p not in PROTOCOLS]
        if bad or not protocols:
            raise ValueError(f"--protocol {args.protocol}: choose from {', '.join(PROTOCOLS)}")
        bench = benchmark_or_default(args.benchmark_dir, args.cache_dir, announce=lambda m: print(f"evaluate: {m}"))
        tracking = tracking_from_flags(args.mlflow, args.mlflow_experiment)
    except (ConfigError, GeoBenchFormatError, ValueError, yaml.YAMLError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    encoders = ["checkpoint"] + (["random-init"] if args.baseline == "random-init" else [])
    seeds = config["run"]["seeds"]
    t0 = time.time()

    started_here = start_ray(log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    pairs = [(task, protocol) for task in tasks for protocol in PROTOCOLS if protocol in protocols]
    pending = submit_jobs(
        encoders,
        pairs,
        seeds,
        config,
        args.checkpoint,
        str(bench),
        args.config,
        num_gpus=args.gpu_fraction if gpus else 0,
    )
    records = gather(pending, echo=True)
    if started_here:
        ray.shutdown()

    shown = storage.redact(args.checkpoint)  # a URI's credentials stay out of the report
    names = {
        "checkpoint": f"HQ-JEPA ({storage.split(shown.partition('?')[0])[1]})",
        "random-init": "Random init (same arch.)",
    }
    meta = {
        "checkpoint": shown,
        "benchmark_dir": str(bench),
        "tasks": tasks,
        "protocols": protocols,
        "encoders": encoders,
        "seeds": seeds,
        "eval_config": config,
        "model_config": args.config,
        "gpus": bool(gpus),
        "seconds": round(time.time() - t0, 1),
    }
    paths = write_report(args.out, records, meta, names)
    print(Path(paths["table"]).read_text())
    failed = sum(r.get("status") != "ok" for r in records)
    if tracking is not None:
        paths["mlflow_run_id"] = track_evaluation(tracking, config, meta, records, paths, args)
    print(json.dumps({"runs": len(records), "failed": failed, **paths}))
    return 3 if failed else 0


def track_evaluation(tracking, config: dict, meta: dict, records: list[dict], paths: dict, args) -> str | None:
    """Step 5 of the module docstring; returns the MLflow run id (None, with a warning, when the
    tracking server fails: the results are on disk already)."""
    from hqjepa import provenance
    from hqjepa import tracking as tr
    from hqjepa.eval.report import summarize

    settings = {k: v for k, v in meta.items() if k not in ("eval_config", "seconds")}
    cells = {
        f"{encoder}/{task}/{protocol}": {k: cell[k] for k in ("mean", "std", "valid_mean", "n")}
        for encoder, by_protocol in summarize(records).items()
        for protocol, by_task in by_protocol.items()
        for task, cell in by_task.items()
    }
    failed = sum(r.get("status") != "ok" for r in records)
    tags = {
        "hqjepa.job": "evaluate",
        "hqjepa.checkpoint": args.checkpoint,
        "hqjepa.commit": provenance.git_commit(ROOT),
    }
    try:
        run = tr.start_run(
            tracking,
            f"evaluate-{Path(args.out).resolve().name}",
            tr.flatten_params({**config, "evaluate": settings}),
            tags,
        )
        tr.log_metrics(
            run, {**tr.summary_metrics(cells), "jobs": len(records), "failed_jobs": failed, "seconds": meta["seconds"]}
        )
        tr.log_artifacts(run, [paths["results"], paths["table"], paths["chart"]])
        tr.end_run(run, "FINISHED" if failed < len(records) else "FAILED")
    except Exception as e:  # a tracking outage must not change the exit status
        print(f"evaluate: warning: MLflow tracking at {tracking.uri} failed: {e}", file=sys.stderr)
        return None
    return run["run_id"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        help="encoder export (export.pt) or training checkpoint: a path or a URI (s3://bucket/runs/NAME/export.pt, "
        "read by each task from a temporary copy)",
    )
    p.add_argument("--tasks", default="all", help="all, or a comma list of GeoBench task names")
    p.add_argument("--protocol", default="linear,finetune", help="comma list of: linear, finetune")
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 (default: run.seeds of the eval config)")
    p.add_argument("--baseline", choices=("none", "random-init"), default="none")
    p.add_argument(
        "--benchmark-dir",
        default=None,
        help="GeoBench root (default: $GEO_BENCH_DIR, else a small synthetic GeoBench written once under --cache-dir)",
    )
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "data"), help="where the embedded benchmark is cached")
    p.add_argument("--out", default="runs/geobench", help="where results.json, table.md, results.png go")
    p.add_argument("--eval-config", default=str(ROOT / "configs" / "eval.yaml"))
    p.add_argument("--config", default=None, help="model config the checkpoint must match (and random-init uses)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override an eval-config value, e.g. linear.epochs=20 (repeatable)",
    )
    p.add_argument("--gpu-fraction", type=float, default=0.25, help="GPU share per Ray task when GPUs exist")
    add_tracking_args(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
