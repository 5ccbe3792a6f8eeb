"""Hyperparameter search for HQ-JEPA on Ray Tune + Optuna: short pretrainings scored by GeoBench probes.

    python ray_jobs/tune.py --space tune_spaces/masking.yaml [--config configs/tiny.yaml] [--trials 20]
        [--budget-epochs 2] [--rounds 2] [--metric geobench/m-eurosat/linear] [--sampler tpe]
        [--benchmark-dir DIR] [--storage runs/tune] [--name masking] [--set section.key=value] [--resume]

The story of a search:
1. The base config (--config, --set), the search space (hqjepa/tuning/space.py), the metric, the
   GeoBench directory, the eval settings and the budget are read and checked here: a bad space
   fails before Ray starts. With data.source synthetic the shards are made (and cached) here too,
   so concurrent trials never race to write them. Everything is kept in EXP/search.json
   (EXP = storage/name), so `--resume` needs only the name.
2. Ray starts embedded, or connects to a cluster (RAY_ADDRESS, as under `ray job submit`).
3. Ray Tune runs the trials. Optuna draws each configuration: `OptunaSearch` takes the space as a
   define-by-run function, with a seeded sampler (TPE by default; Optuna's GridSampler for a grid
   space) and an SQLite study in EXP/optuna.db (`optuna-dashboard sqlite:///EXP/optuna.db` opens
   it). ASHA, on the trial metric with rounds as its time, stops poor trials between rounds; a grid
   runs every point at the full budget (FIFO) unless --scheduler asha.
4. A trial (`run_trial`, a Tune function trainable holding --trial-cpus) trains in R rounds: each
   round calls ray_jobs/pretrain.py's `pretrain` with a larger train.max_steps, which continues the
   same Ray Train run (EXP/runs/<trial id>) from its latest checkpoint; the trial then probes the
   export on the GeoBench task(s) with ray_jobs/evaluate.py's Ray tasks, one per (task, protocol,
   seed) (and one feature extraction per linear task), each asking for --eval-cpus CPU (and
   --eval-gpus GPU when the cluster has GPUs), scheduled outside the trial's placement group so the
   cluster farms them; it waits on them and reports {metric, round, ...} to Tune with a checkpoint
   naming the round. --protocol linear,finetune reports both scores of every metric's task (the
   objective stays --metric).
5. Interrupted (Ctrl-C, a lost driver): the same command with --resume restores the experiment
   (Tuner.restore(..., resume_errored=True)); finished trials stay finished and are not re-run,
   an unfinished trial continues at its next round from its Train run's latest checkpoint.
6. EXP gets trials.csv and trials.md (every trial: parameters, metric, rounds, status), params.png
   (metric vs each parameter), history.png (optimisation history) and best_config.yaml (the base
   config with the best trial's values, for ray_jobs/pretrain.py --config).
7. With --mlflow URI (or $MLFLOW_TRACKING_URI), experiment --mlflow-experiment (default "hqjepa"):
   the search is an MLflow run (its settings as params, EXP/mlflow_run.json names it) and Ray's
   `MLflowLoggerCallback` makes each trial a run nested under it (the trial's sampled values as
   params, every report as metrics; the objective as "geobench/<task>/<protocol>/valid" beside its
   ".../test"). At the end the search's run gets step 6's files and
   search.json as artifacts and the best score and trial counts as metrics. --resume continues the
   same runs, whatever the flags say.
On a multi-node cluster --storage must be a filesystem every node mounts at the same path (NFS):
trials on other nodes write their Train runs under EXP/runs; only the driver opens EXP/optuna.db.
Exit status: 0 when every trial finished (some may have failed: see the table), 130 when the
search was interrupted (resume it), 2 on a bad space, config or option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from ray_jobs.runtime import ROOT, start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
import yaml
from ray import tune

from hqjepa.cli import ArgumentParser
from hqjepa.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
    yaml_load,
)
from hqjepa.eval.config import apply_eval_overrides, eval_config_from_dict, load_eval_config
from hqjepa.eval.default_benchmark import benchmark_or_default
from hqjepa.eval.geobench import TASKS
from hqjepa.eval.safe_pickle import GeoBenchFormatError
from hqjepa.tracking import add_tracking_args, tracking_from_flags
from hqjepa.tuning.report import write_report
from hqjepa.tuning.space import SAMPLERS, SearchSpace, load_space, make_sampler, space_from_dict
from hqjepa.tuning.trial import (
    budget_config,
    objective_name,
    parse_metrics,
    probe_pairs,
    round_ends,
    scores_from_records,
)
from ray_jobs.evaluate import gather, submit_jobs
from ray_jobs.pretrain import plan_steps, pretrain, synthetic_shards, training_rows

DEFAULT_METRIC = "geobench/m-eurosat/linear"
SETTINGS_FILE = "search.json"
ROUND_FILE = "round.json"
ROUNDS_LOG = "rounds.jsonl"
INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """Everything a search needs, checked once by the driver and kept in EXP/search.json, so that
    trials (which receive it through `tune.with_parameters`) and `--resume` read the same values."""

    name: str  # the search's name; EXP = storage/name
    storage: str
    exp_dir: str
    space_source: str  # the space file as the user named it
    space_file: str
    space: dict  # the space file's parsed YAML
    config_file: str
    base_config: dict  # the checked base config (Config.to_dict)
    sets: list[str]  # the --set overrides, for the report
    metric: str  # geobench/<task>/<protocol>[,...]
    mode: str  # "max" or "min"
    trials: int
    budget_epochs: int
    rounds: int
    total_steps: int  # steps of a full-budget trial
    sampler: str
    seed: int
    scheduler: str  # "asha" or "fifo"
    reduction_factor: float
    workers: int  # Ray Train workers per trial
    gpus_per_worker: float
    cpus_per_worker: float | None  # None until plan_resources fills it in
    trial_cpus: float
    trial_gpus: float
    protocols: list[str]  # protocols probed on every metric's task besides the metric's own (reported)
    eval_cpus: float  # CPUs of each probe task (Ray tasks outside the trial's placement group)
    eval_gpus: float  # GPU share of each probe task when the cluster has GPUs
    max_concurrent: int | None
    max_failures: int
    benchmark_dir: str
    eval_config: dict  # the checked eval config (EvalConfig.to_dict)
    cache_dir: str
    shard_dir: str
    rows: int  # training rows of the shards' split

    def save(self) -> None:
        """Write EXP/search.json."""
        Path(self.exp_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.exp_dir) / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, exp_dir: Path) -> TuneSettings:
        """Read EXP/search.json (a search started by this version of the driver)."""
        raw = json.loads((exp_dir / SETTINGS_FILE).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        if set(raw) != names:
            raise ConfigError(f"{exp_dir / SETTINGS_FILE}: not a search of this version (keys differ)")
        return cls(**raw)

    def space_and_base(self) -> tuple[Config, SearchSpace]:
        """The base config and the search space, rebuilt and rechecked from their saved forms."""
        base = config_from_dict(self.base_config)
        return base, space_from_dict(self.space, base, self.space_source)


# --- one trial (runs in a Ray Tune trial actor) --------------------------------------------------------


def run_trial(config: dict, settings: TuneSettings) -> None:
    """R rounds of pretraining, each continuing the same Train run, each followed by a probe and a report."""
    base, space = settings.space_and_base()
    trial_id = tune.get_context().get_trial_id()
    cfg = budget_config(base, space.overrides(config), settings.budget_epochs)
    _, total = plan_steps(cfg, settings.rows, settings.workers)
    ends = round_ends(total, settings.rounds)
    metrics = parse_metrics(settings.metric)
    pairs = probe_pairs(metrics, settings.protocols)
    seeds = eval_config_from_dict(settings.eval_config).run.seeds
    gpus = settings.eval_gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    runs = Path(settings.exp_dir) / "runs"

    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restored trial: carry on after its last reported round
        with checkpoint.as_directory() as d:
            done = json.loads((Path(d) / ROUND_FILE).read_text())["round"]
    for r in range(done + 1, settings.rounds + 1):
        summary = pretrain(
            apply_overrides(cfg, {"train.max_steps": ends[r - 1]}),
            storage=str(runs),
            name=trial_id,
            workers=settings.workers,
            gpus_per_worker=settings.gpus_per_worker,
            cpus_per_worker=settings.cpus_per_worker,
            max_failures=settings.max_failures,
            cache_dir=Path(settings.cache_dir),
            title=f"{settings.name} {trial_id}",
        )
        pending = submit_jobs(
            ["checkpoint"],
            pairs,
            seeds,
            settings.eval_config,
            summary["export"],
            settings.benchmark_dir,
            num_cpus=settings.eval_cpus,
            num_gpus=gpus,
        )
        scores = scores_from_records(gather(pending), metrics, pairs)
        result = {
            **scores,
            "round": r,
            "steps": ends[r - 1],  # scores holds the objective
            "epochs": settings.budget_epochs * ends[r - 1] / total,
        }
        with (runs / trial_id / ROUNDS_LOG).open("a") as f:  # a plain record of every round that ran
            f.write(json.dumps({"trial_id": trial_id, "time": time.time(), **result}) + "\n")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / ROUND_FILE).write_text(json.dumps({"round": r, "steps": ends[r - 1]}))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# --- the driver -------------------------------------------------------------------------------------


def check_settings(args: argparse.Namespace) -> TuneSettings:
    """Step 1 of the module docstring: every input read and checked, nothing of Ray started."""
    sets = dict(parse_override(s) for s in args.set)
    base = load_config(args.config, sets)
    space = load_space(args.space, base)
    if space.is_grid:
        if args.trials is not None and args.trials != len(space.grid):
            raise ConfigError(
                f"--trials {args.trials}: the grid {space.source} has {len(space.grid)} points and runs each once"
            )
        if args.sampler != "tpe":
            raise ConfigError(f"--sampler {args.sampler}: a grid runs with Optuna's GridSampler")
    make_sampler(args.sampler, args.seed, space)  # an unknown sampler fails here
    for name, value in (("--budget-epochs", args.budget_epochs), ("--rounds", args.rounds)):
        if value < 1:
            raise ConfigError(f"{name} {value}: must be >= 1")
    if args.trial_cpus <= 0:
        raise ConfigError(f"--trial-cpus {args.trial_cpus}: must be > 0 (Ray refuses a trial of no resources)")
    if args.eval_cpus <= 0 or not 0 <= args.eval_gpus <= 1:
        raise ConfigError(f"--eval-cpus {args.eval_cpus} / --eval-gpus {args.eval_gpus}: need > 0 and [0, 1]")
    metric = args.metric or space.metric or DEFAULT_METRIC
    metrics = parse_metrics(metric)
    protocols = [p.strip() for p in (args.protocol or "").split(",") if p.strip()]
    probe_pairs(metrics, protocols)  # an unknown protocol fails here
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    cache = Path(args.cache_dir).resolve()
    bench = benchmark_or_default(args.benchmark_dir, cache, announce=lambda m: print(f"tune: {m}")).resolve()
    missing = [t for t, _ in metrics if not (bench / TASKS[t].benchmark / t).is_dir()]
    if missing:
        raise GeoBenchFormatError(f"{bench}: no task directory {TASKS[missing[0]].benchmark}/{missing[0]}")
    eval_raw = apply_eval_overrides(load_eval_config(args.eval_config).to_dict(), args.eval_set, "--eval-set")
    eval_config = eval_config_from_dict(eval_raw).to_dict()

    if base.data.source == "synthetic":
        shard_dir = synthetic_shards(base, cache)  # once, before any trial
    else:
        shard_dir = base.data.shards
    rows = training_rows(base, shard_dir)
    _, total = plan_steps(budget_config(base, {}, args.budget_epochs), rows, args.workers)
    round_ends(total, args.rounds)

    storage = Path(args.storage).resolve()
    name = args.name or Path(args.space).stem
    return TuneSettings(
        name=name,
        storage=str(storage),
        exp_dir=str(storage / name),
        space_source=space.source,
        space_file=str(Path(args.space).resolve()),
        space=read_space_file(args.space),
        config_file=str(Path(args.config).resolve()),
        base_config=base.to_dict(),
        sets=list(args.set),
        metric=metric,
        mode=space.mode,
        trials=len(space.grid) if space.is_grid else (args.trials or 20),
        budget_epochs=args.budget_epochs,
        rounds=args.rounds,
        total_steps=total,
        sampler="grid" if space.is_grid else args.sampler,
        seed=args.seed,
        scheduler=args.scheduler or ("fifo" if space.is_grid else "asha"),
        reduction_factor=args.reduction_factor,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        trial_cpus=args.trial_cpus,
        trial_gpus=args.trial_gpus,
        protocols=protocols,
        eval_cpus=args.eval_cpus,
        eval_gpus=args.eval_gpus,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        benchmark_dir=str(bench),
        eval_config=eval_config,
        cache_dir=str(cache),
        shard_dir=str(shard_dir),
        rows=rows,
    )


def read_space_file(path: str) -> dict:
    """The space file's YAML as plain data (kept in search.json; parsed as the config parser does)."""
    return yaml_load(Path(path).read_text())


def plan_resources(settings: TuneSettings) -> TuneSettings:
    """Concurrent trials and CPUs per Train worker for this cluster. Per concurrent trial Ray holds
    the trial's own CPU share, the Train workers' CPUs and GPUs, and leaves ~1 CPU for Ray Data.

    Probes are Ray tasks outside the trials' placement groups: they take CPUs that training or other
    trials' probes free. The trial functions' own shares are held for the whole search, so at most
    (CPUs - eval_cpus) / trial_cpus trials run at once: with every running trial waiting on its
    probes, one probe still fits (on 2 CPUs: 0.5 for the trial, 1 for its probe, never a deadlock).
    A cluster too small for even that gets probes of the CPUs left."""
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 1.0), res.get("GPU", 0.0)
    workers = settings.workers
    trial_cpus = settings.trial_cpus
    if settings.gpus_per_worker:
        concurrent = settings.max_concurrent or max(1, int(gpus // (workers * settings.gpus_per_worker)))
    else:
        concurrent = settings.max_concurrent or 1
    eval_cpus = min(settings.eval_cpus, max(cpus - trial_cpus, 0.01))
    fits = max(1, int((cpus - eval_cpus) // trial_cpus))
    if concurrent > fits:
        print(
            f"tune: {concurrent} concurrent trials would leave no CPU for their GeoBench probes on {cpus:g} CPUs; "
            f"running {fits} at once",
            file=sys.stderr,
        )
        concurrent = fits
    cpw = settings.cpus_per_worker or max(0.5, min(4.0, (cpus / concurrent - trial_cpus - 1.0) / workers))
    return dataclasses.replace(settings, max_concurrent=concurrent, cpus_per_worker=cpw, eval_cpus=eval_cpus)


def build_tuner(settings: TuneSettings, restore: bool, callbacks: list | None = None) -> tune.Tuner:
    import optuna
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, settings=settings),
        {"cpu": settings.trial_cpus, "gpu": settings.trial_gpus},
    )
    exp_dir = settings.exp_dir
    if restore:
        return tune.Tuner.restore(exp_dir, trainable=trainable, resume_errored=True)
    _, space = settings.space_and_base()
    objective = objective_name(parse_metrics(settings.metric))
    mode = settings.mode
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(exp_dir) / 'optuna.db'}")
    search = OptunaSearch(
        space=space,
        metric=objective,
        mode=mode,
        study_name=settings.name,
        storage=storage,
        sampler=make_sampler(settings.sampler, settings.seed, space),
    )
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            metric=objective,
            mode=mode,
            time_attr="round",
            max_t=settings.rounds,
            grace_period=1,
            reduction_factor=settings.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=settings.trials,
            max_concurrent_trials=settings.max_concurrent,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            storage_path=settings.storage,
            name=settings.name,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=callbacks,  # restored with the rest of the Tuner on --resume
        ),
    )


def trial_runs_callback(run: dict):
    """Ray's MLflowLoggerCallback for the search whose MLflow run is `run` (its trials' runs are nested
    under it); a trial continued by --resume continues its MLflow run instead of opening another."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from hqjepa import tracking

    class TrialRuns(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            # Ray's own version logs trial.config as it is, and MLflow refuses names such as
            # "mask.target_scale[0]"; its trial -> run map starts empty again after a restore
            runs = self._trial_runs
            if trial not in runs:
                tags = {**self.tags, "trial_name": str(trial)}
                found = tracking.find_run(tracking.Tracking(self.tracking_uri, self.experiment_name), tags)
                runs[trial] = found or self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            run = {"uri": self.tracking_uri, "run_id": runs[trial]}
            tracking.log_params(run, tracking.flatten_params(trial.config))

        def log_trial_result(self, iteration, trial, result):
            # the config is the run's params already (and not valid metric names); the objective
            # "geobench/<task>/<protocol>" beside ".../test" becomes ".../valid" (a file: store needs it)
            result = tracking.folder_safe_metrics({k: v for k, v in result.items() if k != "config"})
            super().log_trial_result(iteration, trial, result)

    tags = {"mlflow.parentRunId": run["run_id"], "hqjepa.job": "tune-trial"}
    return TrialRuns(tracking_uri=run["uri"], experiment_name=run["experiment"], tags=tags)


def open_search_run(settings: TuneSettings, tracking) -> dict | None:
    """The search's own MLflow run: the one EXP/mlflow_run.json names (a resumed search), else a new
    one when `tracking` is on, with the settings (and the base config, "base_config.model.depth") as
    params. None when the search is not tracked."""
    from hqjepa import provenance
    from hqjepa import tracking as tr

    run = tr.read_run_file(settings.exp_dir)
    if run is not None and tr.continue_run(run):
        return run
    if tracking is None:
        return None
    tags = {"hqjepa.job": "tune", "hqjepa.search": settings.exp_dir, "hqjepa.commit": provenance.git_commit(ROOT)}
    run = tr.start_run(tracking, settings.name, tr.flatten_params(dataclasses.asdict(settings)), tags)
    tr.write_run_file(settings.exp_dir, run)
    return run


def close_search_run(run: dict, settings: TuneSettings, paths: dict, interrupted: bool) -> None:
    """The report's files, the best score and the trial counts to the search's MLflow run."""
    from hqjepa import tracking as tr

    files = [paths.get(k) for k in ("table_csv", "table_md", "params_png", "history_png", "best_config")]
    try:
        tr.log_artifacts(run, [f for f in files if f] + [Path(settings.exp_dir) / SETTINGS_FILE])
        best = {"best_metric": paths["best_metric"]} if paths.get("best_metric") is not None else {}
        tr.log_metrics(run, {**best, **tr.summary_metrics({"trials": paths["trials"]})})
        if paths.get("best_trial"):
            tr.client(run["uri"]).set_tag(run["run_id"], "best_trial", paths["best_trial"])
        tr.end_run(run, "KILLED" if interrupted else "FINISHED")
    except Exception as e:  # the search's own files are written; a tracking outage only warns
        print(f"tune: warning: MLflow tracking at {run['uri']} failed: {e}", file=sys.stderr)


def collect_rows(settings: TuneSettings) -> list[dict]:
    """One row per trial from Tune's saved experiment state (hqjepa/tuning/report.py's format)."""
    from ray.tune import ExperimentAnalysis

    # it warns about each trial that has no result yet; the table reports those as unfinished
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

    _, space = settings.space_and_base()
    objective = objective_name(parse_metrics(settings.metric))
    rows = []
    for index, trial in enumerate(ExperimentAnalysis(settings.exp_dir).trials):
        # start order: Tune's tag begins with the trial's 1-based count (its list is not ordered after a restore)
        count = trial.experiment_tag.split("_", 1)[0]
        number = int(count) - 1 if count.isdigit() else index
        last = trial.last_result or {}
        rounds = int(last.get("round", 0) or 0)
        if trial.status == "ERROR":
            status = "error"
        elif trial.status == "TERMINATED":
            status = "complete" if rounds >= settings.rounds else "stopped early"
        else:
            status = "unfinished"
        error = None
        if status == "error":
            err = trial.get_error()
            error = str(err).strip().splitlines()[-1][:300] if err else "failed (see the trial's error.txt)"
        params = dict(trial.config or {})
        point = space.point(params["setting"]) if space.is_grid and "setting" in params else None
        rows.append(
            {
                "number": number,
                "trial_id": trial.trial_id,
                "status": status,
                "rounds": rounds,
                "metric": last.get(objective),
                "error": error,
                "metrics": {k: v for k, v in last.items() if k.startswith("geobench/")},
                "values": space.overrides(params) if params else {},
                "setting": point.name if point else None,
                "factor": point.factor if point else None,
            }
        )
    return rows


def report(settings: TuneSettings) -> dict:
    base, space = settings.space_and_base()
    objective = objective_name(parse_metrics(settings.metric))
    header = [
        f"Best configuration of the search `ray_jobs/tune.py --space {settings.space_source} --name {settings.name}`.",
        f"Base: {Path(settings.config_file).name}" + "".join(f" --set {s}" for s in settings.sets),
        f"Searched on {settings.budget_epochs}-epoch budgets in {settings.rounds} round(s); optim.epochs "
        "and every key not listed below are the base config's.",
    ]
    return write_report(
        settings.exp_dir,
        collect_rows(settings),
        keys=space.keys,
        objective=objective,
        mode=settings.mode,
        rounds=settings.rounds,
        base=base,
        title=f"{settings.name} ({settings.space_source})",
        log_keys=space.log_keys,
        kinds=space.plot_kinds,
        best_header=header,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage = Path(args.storage).resolve()
    try:
        if args.resume:
            if not args.name and not args.space:
                raise ConfigError("--resume: name the search with --name (or the --space it was started with)")
            exp_dir = storage / (args.name or Path(args.space).stem)
            if not (exp_dir / SETTINGS_FILE).exists():
                raise ConfigError(f"--resume: {exp_dir} holds no search ({SETTINGS_FILE} missing)")
            settings = TuneSettings.load(exp_dir)
            settings.space_and_base()  # still a valid space for the saved config
        else:
            if not args.space:
                raise ConfigError("--space FILE is required (a YAML file of tune_spaces/)")
            settings = check_settings(args)
            if Path(settings.exp_dir).exists() and tune.Tuner.can_restore(settings.exp_dir):
                raise ConfigError(
                    f"{settings.exp_dir} already holds a search: add --resume to continue it, or give another --name"
                )
    except (ConfigError, GeoBenchFormatError, ValueError, yaml.YAMLError) as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2

    exp_dir = Path(settings.exp_dir)
    restore = bool(args.resume) and tune.Tuner.can_restore(str(exp_dir))
    try:
        tracking = tracking_from_flags(args.mlflow, args.mlflow_experiment)
    except ConfigError as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2
    start_ray(args.num_cpus)
    if not args.resume:
        settings = plan_resources(settings)
        settings.save()
    try:
        search_run = open_search_run(settings, tracking)
    except Exception as e:
        print(f"tune: error: MLflow tracking at {tracking.uri if tracking else '?'}: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "event": "search",
                "exp_dir": str(exp_dir),
                "resume": restore,
                "space": settings.space_source,
                "trials": settings.trials,
                "metric": settings.metric,
                "sampler": settings.sampler,
                "scheduler": settings.scheduler,
                "rounds": settings.rounds,
                "budget_epochs": settings.budget_epochs,
                "steps": settings.total_steps,
                "max_concurrent": settings.max_concurrent,
                "cpus_per_worker": settings.cpus_per_worker,
                "optuna": f"sqlite:///{exp_dir / 'optuna.db'}",
                "mlflow_run": search_run and search_run["run_id"],
            }
        ),
        flush=True,
    )
    build_tuner(settings, restore, [trial_runs_callback(search_run)] if search_run else None).fit()

    paths = report(settings)
    counts = paths["trials"]
    interrupted = counts.get("unfinished", 0) > 0 or counts["total"] < settings.trials
    if search_run is not None:
        close_search_run(search_run, settings, paths, interrupted)
    print(Path(paths["table_md"]).read_text(), flush=True)
    print(json.dumps({"event": "interrupted" if interrupted else "done", **paths}), flush=True)
    if interrupted:
        print(
            f"tune: the search stopped before every trial finished; continue it with --resume --name "
            f"{settings.name} --storage {settings.storage}",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="search space YAML (tune_spaces/*.yaml)")
    p.add_argument("--config", default=str(ROOT / "configs/tiny.yaml"), help="base run config")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a base-config value (checked like the YAML)",
    )
    p.add_argument("--trials", type=int, default=None, help="trials to sample (default 20; a grid runs its points)")
    p.add_argument("--budget-epochs", type=int, default=2, help="pretraining epochs per trial (optim.epochs)")
    p.add_argument("--rounds", type=int, default=2, help="probe-and-report rounds per trial (ASHA's time)")
    p.add_argument(
        "--metric",
        default=None,
        help=f"geobench/<task>/<protocol>, or a comma list (mean); default: the space's, else {DEFAULT_METRIC}",
    )
    p.add_argument("--sampler", default="tpe", help=f"Optuna sampler: {', '.join(SAMPLERS)}")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument(
        "--scheduler",
        choices=("asha", "fifo"),
        default=None,
        help="asha stops poor trials between rounds (default for sampled spaces); fifo runs all (grids)",
    )
    p.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA's reduction factor")
    p.add_argument(
        "--benchmark-dir",
        default=None,
        help="GeoBench root (default: $GEO_BENCH_DIR, else a small synthetic GeoBench written once under --cache-dir)",
    )
    p.add_argument("--eval-config", default=str(ROOT / "configs" / "eval.yaml"))
    p.add_argument(
        "--eval-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override an eval-config value, e.g. linear.epochs=20 or run.seeds=[0]",
    )
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="default: the CPUs one concurrent trial may use, less its own share and 1 for Ray Data",
    )
    p.add_argument("--trial-cpus", type=float, default=0.5, help="CPUs the trial function itself holds (> 0)")
    p.add_argument("--trial-gpus", type=float, default=0.0, help="GPU share of the trial function itself")
    p.add_argument(
        "--protocol",
        default=None,
        help="comma list of linear, finetune: also probe every metric's task under these (reported in "
        "trials.csv as geobench/<task>/<protocol>, not optimised); default: the metrics' own protocols",
    )
    p.add_argument("--eval-cpus", type=float, default=1.0, help="CPUs of each GeoBench probe task")
    p.add_argument("--eval-gpus", type=float, default=0.25, help="GPU share of each probe task when GPUs exist")
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at once (default: GPUs / GPUs per trial, or 1 without GPUs)",
    )
    p.add_argument("--max-failures", type=int, default=2, help="Train worker-group restarts within a trial")
    p.add_argument(
        "--storage",
        default=str(ROOT / "runs" / "tune"),
        help="where searches live: a local path, or a shared filesystem on a multi-node cluster",
    )
    p.add_argument("--name", default=None, help="the search's name (default: the space file's stem)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search STORAGE/NAME")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded Ray (default: all)")
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "data"), help="where synthetic shards are cached")
    add_tracking_args(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
