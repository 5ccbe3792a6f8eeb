"""HQ-JEPA pretraining on Ray: Ray Data streams Parquet shards into a Ray Train TorchTrainer.

    python ray_jobs/pretrain.py --config configs/tiny.yaml                 # embedded local Ray
    ray job submit --working-dir . -- python ray_jobs/pretrain.py \\
        --config configs/paper.yaml --data s3://bucket/ben-shards --workers 4 --gpus-per-worker 1 \\
        --storage s3://bucket/runs                                          # on a cluster

The story of a run:
1. The config is loaded and checked (bad values fail here, before Ray starts), and the run name is
   claimed: a lock (STORAGE/.NAME.lock; a lease on S3) refuses a second live driver, and RUN_DIR/run.json
   (the resolved settings and their sha256) refuses other settings under an existing name, naming
   the keys (`hqjepa.runs`; --resume RUN_DIR continues with new settings, --force-new starts over).
2. Ray starts embedded, or connects to the cluster when RAY_ADDRESS is set (as under
   `ray job submit`). With no --data and `data.source: synthetic`, a small synthetic BigEarthNet
   archive is written and converted to shards first, through the same converter as real data.
3. The shards become a Ray Dataset (footers validated, decode/resample/normalise per block), split
   across the workers by Ray Train.
4. Each worker runs `train_loop`: the library's Trainer steps with gloo (CPU) or NCCL (GPU), bf16
   autocast on GPU, global batch = optim.batch_size x workers x optim.accumulation.
5. Every step's metrics go to Ray (`ray.train.report`, every `train.report_every` steps) and to
   metrics.csv + TensorBoard on rank 0; every `train.checkpoint_every` steps and at the end rank 0
   reports a checkpoint (model, teacher, optimiser, schedules, step, RNG, config). CheckpointConfig
   keeps the best `train.keep_checkpoints` by smoothed loss plus the latest.
6. A worker failure restarts the group from the latest checkpoint (FailureConfig); with --min-workers
   the group is elastic (Ray Train v2's ScalingConfig(num_workers=(min, max))), so after a lost node
   it restarts with the workers the remaining nodes hold. Rerunning the same command, or with
   --resume RUN_DIR (a path or s3:// URI), continues a stopped run. Either way training resumes at
   the step after the checkpoint, skipping the micro-batches that step had already consumed. Every
   checkpoint carries checksums.json, written last; a latest checkpoint that fails it (torn,
   truncated) gives way to the newest older one that passes.
7. At the end the driver writes RUN_DIR/export.pt (the EMA target encoder, or the student with
   `--set train.export_encoder=student`, its config and the band statistics it was trained with,
   ready for `ray_jobs/evaluate.py`), RUN_DIR/encoder/ (the same encoder as a portable artifact:
   model.safetensors + config.json, for `hqjepa.load_pretrained` and torch.hub), metrics.csv,
   losses.png and summary.json (on an object store: made locally, uploaded to the run's prefix),
   and prints the summary.
8. With --mlflow URI (or $MLFLOW_TRACKING_URI) the run is also an MLflow run (experiment
   --mlflow-experiment, default "hqjepa"): rank 0 opens it with Ray's `setup_mlflow`, the resolved
   config and the plan as params ("model.embed_dim", "plan.workers"), and logs every step's metrics
   (metrics.csv's row); the driver uploads losses.png, summary.json, export.pt and encoder/ at the end.
   RUN_DIR/mlflow_run.json names the MLflow run, so a resumed or restarted run continues it; a
   value changed on resume is the tag "changed.<key>" (MLflow params cannot change).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ray_jobs.runtime import ROOT, start_ray  # first: sets the environment Ray reads at start

# isort: split
import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from hqjepa.cli import ArgumentParser
from hqjepa.config import Config, ConfigError, config_from_dict, load_config, parse_override
from hqjepa.tracking import add_tracking_args, tracking_from_flags

STATE_FILE = "state.pt"
EXPORT_FILE = "export.pt"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints
SMOOTHING_WINDOW = 20  # steps in `loss_smooth`, the checkpoint score
STATS_SPLIT = "train"  # whose band statistics normalise the inputs (training_dataset's default)
ARTIFACT_DIR = "encoder"  # the portable encoder (model.safetensors + config.json) beside export.pt


# --- worker code ------------------------------------------------------------------------------------


def quiet_report_log() -> None:
    """Train v2 logs every report's full metrics at INFO from a logger named by its file path
    (ray/train/v2/_internal/execution/context.py, Ray 2.60); our CSV and TensorBoard hold them."""
    try:
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray layout: the lines stay, nothing breaks
        pass


class StepReporter:
    """What a worker does with each finished step: one job per method, `on_step` calls them in order.

    Every rank reports to Ray Train when a report is due (a report is a barrier); rank 0 alone keeps
    metrics.csv and TensorBoard and attaches the checkpoint.
    """

    mlflow = None  # rank 0, when tracked: the MLflow module `setup_mlflow` returned (see `track`)
    mlflow_run: dict | None = None  # its run record (hqjepa.tracking.RUN_FILE)
    failed = False  # set by train_loop when the steps raised: the MLflow run ends FAILED

    def __init__(
        self,
        trainer,
        cfg: Config,
        *,
        rank: int,
        world: int,
        max_steps: int,
        log_dir: Path,
        tensorboard_dir: str | None,
        band_stats=None,
        run_location: str | None = None,
    ) -> None:
        from hqjepa.runlog import RunLog
        from hqjepa.runs.storage import is_uri

        self.trainer, self.cfg, self.rank, self.world, self.max_steps = trainer, cfg, rank, world, max_steps
        self.log_dir = log_dir
        self.band_stats = band_stats  # what the stream normalised with; export.pt carries it
        self.run_location = run_location  # the run directory (path or URI): checkpoint names are checked there
        self.window: list[float] = []
        self.log = RunLog(log_dir, tensorboard=False, resume_step=trainer.step) if rank == 0 else None
        self.tb = None
        self.tensorboard_dir, self.tensorboard_upload = tensorboard_dir, None
        if tensorboard_dir and is_uri(tensorboard_dir):  # object store: a local folder, uploaded at checkpoints
            self.tensorboard_dir, self.tensorboard_upload = str(log_dir / "tensorboard"), tensorboard_dir
        if rank == 0 and self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(self.tensorboard_dir, purge_step=trainer.step)

    def on_step(self, metrics: dict[str, float]) -> None:
        """Called by `hqjepa.loop.run_steps` after each optimiser step."""
        step = self.trainer.step  # steps completed
        self.add_derived(metrics)
        self.write_logs(step - 1, metrics)
        due_ckpt = step % self.cfg.train.checkpoint_every == 0 or step == self.max_steps
        if due_ckpt:
            self.report_checkpoint(step, metrics)
        elif step % self.cfg.train.report_every == 0:
            ray.train.report(metrics)

    def add_derived(self, metrics: dict[str, float]) -> None:
        """`loss_smooth` (mean of the last SMOOTHING_WINDOW losses) and the global sample rate."""
        self.window.append(metrics["loss"])
        del self.window[:-SMOOTHING_WINDOW]
        metrics["loss_smooth"] = sum(self.window) / len(self.window)
        metrics["global_samples_per_s"] = metrics["samples_per_s"] * self.world

    def write_logs(self, row: int, metrics: dict[str, float]) -> None:
        """Rank 0: one metrics.csv row and the TensorBoard scalars for this step."""
        if self.log is not None:
            self.log.log(row, metrics)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, row)
        if self.mlflow is not None:  # the same row, queued (end_run in `close` flushes it)
            from hqjepa.tracking import clean_metrics

            self.mlflow.log_metrics(clean_metrics(metrics), step=row, synchronous=False)

    def track(self, settings: dict) -> None:
        """Rank 0: open the run's MLflow run with Ray's `setup_mlflow`, or continue the one named by
        RUN/mlflow_run.json (a resumed or restarted run); the resolved config and the plan become its
        params, a value changed since becomes the tag "changed.<key>"."""
        from ray.air.integrations.mlflow import setup_mlflow

        from hqjepa import tracking
        from hqjepa.runs import storage as store

        tracking.allow_file_store(settings["uri"])
        where = store.join(settings["run_location"], tracking.RUN_FILE)
        known = json.loads(store.read_bytes(where)) if store.exists(where) else None
        params = tracking.flatten_params({**self.cfg.to_dict(), "plan": settings["plan"]})
        logged = tracking.logged_params(settings["uri"], known["run_id"]) if known else None
        changed: dict[str, str] = {}
        if logged is not None:
            params, changed = tracking.split_params(params, logged)
            os.environ["MLFLOW_RUN_ID"] = known["run_id"]  # mlflow.start_run continues this run
        self.mlflow = setup_mlflow(
            params,
            tracking_uri=settings["uri"],
            experiment_name=settings["experiment"],
            run_name=settings["run_name"],
            create_experiment_if_not_exists=True,
            tags=settings["tags"],
        )
        if changed:
            self.mlflow.set_tags({f"changed.{k}": v for k, v in changed.items()})
        info = self.mlflow.active_run().info
        self.mlflow_run = {
            "uri": settings["uri"],
            "experiment": settings["experiment"],
            "experiment_id": info.experiment_id,
            "run_id": info.run_id,
        }
        store.write_bytes(where, (json.dumps(self.mlflow_run, indent=1) + "\n").encode())

    def report_checkpoint(self, step: int, metrics: dict[str, float]) -> None:
        """Every rank reports; rank 0 attaches state.pt, metrics.csv and, at the end, export.pt."""
        from hqjepa.checkpoint import export_trained_encoder, save_training_state
        from hqjepa.runs import storage
        from hqjepa.runs.integrity import checkpoint_dir_name, write_checksums

        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_training_state(Path(tmp) / STATE_FILE, self.trainer)
            shutil.copy(self.log_dir / "metrics.csv", Path(tmp) / "metrics.csv")
            if step == self.max_steps:  # with the statistics the inputs were normalised with
                export_trained_encoder(
                    Path(tmp) / EXPORT_FILE, self.trainer.core, self.cfg, {"step": step}, stats=self.band_stats
                )
            write_checksums(tmp)  # last: a checkpoint without checksums.json is a torn write
            # never into a directory an earlier attempt left (one that failed verification, say)
            taken = storage.list_names(self.run_location) if self.run_location else []
            name = checkpoint_dir_name(step, taken)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        self.upload_tensorboard()

    def upload_tensorboard(self) -> None:
        """Object-store runs: TensorBoard writes to a local folder that is copied to RUN/tensorboard."""
        if self.tb is not None and self.tensorboard_upload:
            from hqjepa.runs import storage

            self.tb.flush()
            storage.upload(self.tensorboard_dir, self.tensorboard_upload)

    def close(self) -> None:
        """Flush TensorBoard (and upload it, for an object-store run); end the MLflow session."""
        if self.tb is not None:
            self.upload_tensorboard()
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run("FAILED" if self.failed else "FINISHED")


def older_checkpoints(latest: Checkpoint) -> list[Checkpoint]:
    """The run's other `step_*` checkpoints older than `latest`, newest first, on its filesystem
    (local, NFS or an object store). Newer ones are never used: Ray Train had not registered them."""
    import posixpath

    from hqjepa.runs.integrity import checkpoints_newest_first, step_of

    run_path = posixpath.dirname(latest.path.rstrip("/"))
    newest = step_of(posixpath.basename(latest.path.rstrip("/")))
    paths = checkpoints_newest_first(latest.filesystem, run_path)
    return [
        Checkpoint(p, filesystem=latest.filesystem)
        for p in paths
        if newest is None or step_of(posixpath.basename(p)) < newest
    ]


def restore(trainer, log_dir: Path, resume_from: str | None, *, rank: int, world: int) -> str | None:
    """Load the checkpoint to continue from into `trainer` (and its metrics.csv into `log_dir`);
    returns its path, None on a fresh start.

    Ray Train's latest checkpoint (a retry or a rerun of the run), else `resume_from` (a checkpoint
    directory the user named). Each is verified against its checksums.json first; a latest
    checkpoint that fails (torn or truncated) gives way to the newest older one of the run that
    verifies, with a warning naming both. Rank 0 chooses and the other ranks load its choice, so
    every rank resumes at the same step. A named checkpoint that fails is an error."""
    import torch.distributed as dist

    from hqjepa.checkpoint import CheckpointError, load_training_state
    from hqjepa.runs.integrity import CorruptCheckpoint, verify_dir

    latest = ray.train.get_checkpoint()
    if latest is None and resume_from:
        latest = Checkpoint(resume_from)
    if latest is None:
        return None
    fallbacks = older_checkpoints(latest) if ray.train.get_checkpoint() is not None else []

    def load(ckpt: Checkpoint) -> None:
        with ckpt.as_directory() as d:
            verify_dir(d)
            load_training_state(Path(d) / STATE_FILE, trainer)
            if (Path(d) / "metrics.csv").exists():
                shutil.copy(Path(d) / "metrics.csv", log_dir / "metrics.csv")

    chosen, problems = None, []
    if rank == 0:
        for ckpt in [latest, *fallbacks]:
            try:
                load(ckpt)
            except CorruptCheckpoint as e:
                problems.append(str(e))
                continue
            chosen = ckpt.path
            break
        if problems and chosen is not None:
            print(
                f"WARNING: checkpoint {latest.path} failed verification ({problems[0]}); "
                f"resuming from {chosen} instead",
                file=sys.stderr,
                flush=True,
            )
    if world > 1 and dist.is_initialized():
        box = [chosen]
        dist.broadcast_object_list(box, src=0)
        chosen = box[0]
        if rank != 0 and chosen is not None:
            load(Checkpoint(chosen, filesystem=latest.filesystem))
    if chosen is None:
        detail = "; ".join(problems) or "rank 0 found none"
        raise CheckpointError(
            f"no checkpoint of this run verifies ({detail}); start over with --force-new or a new --experiment"
        )
    return chosen


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import torch

    from hqjepa.data.compact import BatchExpander
    from hqjepa.data.shards import band_stats, load_manifest
    from hqjepa.engine import Trainer
    from hqjepa.loop import FaultInjector, run_steps
    from hqjepa.models.hqjepa import HQJEPA
    from ray_jobs._data import compact_torch_batches

    quiet_report_log()
    cfg = config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.optim.seed + rank)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(HQJEPA(cfg))  # DDP when world > 1 (gloo on CPU, NCCL on GPU)
    # the stream carries the stored band bytes; the step decodes them on its device
    expander = BatchExpander.from_manifest(load_manifest(config["shard_dir"]), STATS_SPLIT)
    trainer = Trainer(model, cfg, config["steps_per_epoch"], device, input_transform=expander)

    log_dir = Path(tempfile.mkdtemp(prefix="hqjepa-log-"))
    restore(trainer, log_dir, config.get("resume_from"), rank=rank, world=world)
    reporter = StepReporter(
        trainer,
        cfg,
        rank=rank,
        world=world,
        max_steps=config["max_steps"],
        log_dir=log_dir,
        tensorboard_dir=config.get("tensorboard_dir"),
        band_stats=band_stats(load_manifest(config["shard_dir"]), STATS_SPLIT),
        run_location=config.get("run_location"),
    )
    if rank == 0 and config.get("mlflow"):
        reporter.track(config["mlflow"])

    shard = ray.train.get_dataset_shard("train")
    seed = cfg.optim.seed

    def epoch_batches(epoch: int):
        # masks are seeded by (seed, rank, epoch, the batch's patch ids): the same on a rerun
        return compact_torch_batches(
            shard,
            cfg.optim.batch_size,
            cfg.mask,
            cfg.model.grid,
            seed=[seed, rank, epoch],
            shard_dir=config["shard_dir"],
            shuffle_buffer=cfg.data.shuffle_buffer,
            shuffle_seed=seed * 1_000_003 + epoch * 1_009 + rank,
            prefetch_batches=cfg.data.prefetch_batches,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )

    marker = Path(config["fault_marker"]) if config.get("fault_marker") else None
    fail_rank = int(os.environ.get("HQJEPA_FAIL_RANK", world - 1))
    fault = FaultInjector(cfg.train.fail_at_step, marker) if rank == fail_rank else None
    try:
        run_steps(trainer, epoch_batches, config["max_steps"], reporter.on_step, fault)
    except BaseException:
        reporter.failed = True
        raise
    finally:
        reporter.close()


# --- the driver -------------------------------------------------------------------------------------


def synthetic_shards(cfg: Config, cache_root: Path) -> Path:
    """A small synthetic BigEarthNet (v2 layout, real GeoTIFFs) converted to shards; cached."""
    from hqjepa.data.convert import convert_archive
    from hqjepa.data.synth_archive import write_archive

    out = cache_root / f"synthetic-{cfg.data.synthetic_pairs}-seed{cfg.optim.seed}"
    shards = out / "shards"
    if (shards / "_manifest.json").exists():
        return shards
    archive = out / "archive"
    if not archive.exists():
        print(
            f"writing a synthetic BigEarthNet v2 archive of {cfg.data.synthetic_pairs} pairs to {archive}", flush=True
        )
        write_archive(
            archive, cfg.data.synthetic_pairs, layout="v2", seed=cfg.optim.seed, max_classes=cfg.data.synthetic_classes
        )
    summary = convert_archive(archive, shards, layout="v2", shard_size=128)
    print(summary.line, flush=True)
    return shards


def plan_steps(cfg: Config, rows: int, workers: int) -> tuple[int, int]:
    """Steps per epoch (every rank sees rows // workers rows) and the run's length."""
    per_rank = rows // workers
    spe = cfg.train.steps_per_epoch or per_rank // (cfg.optim.batch_size * cfg.optim.accumulation)
    if spe < 1:
        raise ConfigError(
            f"{rows} training rows over {workers} workers do not fill one step of "
            f"{cfg.optim.batch_size} x {cfg.optim.accumulation} per worker; use fewer workers, "
            "a smaller optim.batch_size or more data"
        )
    total = cfg.optim.epochs * spe
    return spe, min(cfg.train.max_steps or total, total)


def training_rows(cfg: Config, shard_dir: str | Path) -> int:
    """Rows of the configured split (`data.split`; null: every row) in the shards' manifest."""
    from hqjepa.data.shards import load_manifest

    manifest = load_manifest(shard_dir)
    splits = manifest.get("split_counts", {})
    rows = splits.get(cfg.data.split, 0) if cfg.data.split else manifest["pairs"]
    if rows == 0:
        raise ConfigError(
            f"{shard_dir}: no rows of split {cfg.data.split!r} (split counts: {splits}); "
            "set data.split: null to train on every row"
        )
    return rows


def pretrain(
    cfg: Config,
    *,
    storage: str,
    name: str,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    max_failures: int = 2,
    resume_from: str | None = None,
    cache_dir: Path = ROOT / "runs" / "data",
    title: str = "",
    min_workers: int | None = None,
    tracking=None,
) -> dict:
    """Steps 3-7 of the module docstring on a running Ray; returns the run's summary. Rerunning
    with the same storage and name continues the run (Ray Train finds its snapshot); a larger
    `train.max_steps` then trains further, as Ray Tune trials do round by round.

    `min_workers` < `workers` makes the worker group elastic (Ray Train v2's
    `ScalingConfig(num_workers=(min, max))`): when a node is lost the group restarts from the latest
    checkpoint with as many workers as the remaining nodes hold, down to `min_workers`, instead of
    waiting for `workers` to fit again. Steps per epoch stay those planned for `workers`."""
    from hqjepa.runs import storage as store
    from ray_jobs._data import training_dataset

    run_location = store.join(storage, name)  # a path, or a URI on an object store
    run_dir = Path(run_location) if not store.is_uri(storage) else None
    if cfg.data.source == "synthetic":
        shard_dir = synthetic_shards(cfg, Path(cache_dir))
    else:
        shard_dir = cfg.data.shards  # a path or a URI (s3://...): pyarrow resolves it
    rows = training_rows(cfg, shard_dir)
    spe, max_steps = plan_steps(cfg, rows, workers)

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = cfg.data.deterministic  # deterministic split across ranks
    dataset = training_dataset(
        shard_dir, split=cfg.data.split, stats_split=STATS_SPLIT, shuffle_files=not cfg.data.deterministic
    )

    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    cpus = cpus_per_worker or max(0.5, min(4.0, (cluster_cpus - 1) / workers))
    resources = {"CPU": cpus, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    global_batch = cfg.optim.batch_size * workers * cfg.optim.accumulation
    plan = {
        "event": "plan",
        "run": name,
        "storage": storage,
        "shards": str(shard_dir),
        "rows": rows,
        "workers": workers,
        "resources_per_worker": resources,
        "global_batch": global_batch,
        "steps_per_epoch": spe,
        "max_steps": max_steps,
        # what the run continues from: Ray Train's snapshot of this run, a named checkpoint, or nothing
        "continues": "run" if store.exists(store.join(run_location, SNAPSHOT_FILE)) else resume_from,
    }
    if min_workers is not None and min_workers < workers:
        plan["min_workers"] = min_workers
    print(json.dumps(store.redact_record(plan)), flush=True)

    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "steps_per_epoch": spe,
            "max_steps": max_steps,
            "shard_dir": str(shard_dir),
            "resume_from": resume_from,
            "run_location": run_location,
            "tensorboard_dir": store.join(run_location, "tensorboard"),
            "fault_marker": store.join(run_location, ".fault_injected"),
            "mlflow": tracking_settings(tracking, plan, run_location) if tracking else None,
        },
        scaling_config=ScalingConfig(
            num_workers=(min_workers, workers) if min_workers is not None and min_workers < workers else workers,
            use_gpu=bool(gpus_per_worker),
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="loss_smooth",
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=ctx.execution_options),
    )
    t0 = time.time()
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {name} failed: {result.error}") from result.error
    summary = finish(result, run_location, name, time.time() - t0, title or name)
    if tracking is not None:
        try:
            summary["mlflow"] = track_artifacts(run_location)
        except Exception as e:  # the run's files are written: a tracking outage now only warns
            print(f"pretrain: warning: MLflow tracking at {tracking.uri} failed: {e}", file=sys.stderr, flush=True)
    return summary


def tracking_settings(tracking, plan: dict, run_location: str) -> dict:
    """What rank 0's `StepReporter.track` needs: the tracking (hqjepa.tracking.Tracking), where the
    run file lives, the run's name, params beyond the config (the plan) and tags."""
    from hqjepa.provenance import git_commit
    from hqjepa.runs import storage as store

    keep = ("rows", "workers", "resources_per_worker", "global_batch", "steps_per_epoch", "max_steps")
    return {
        **tracking.to_dict(),
        "run_location": run_location,
        "run_name": plan["run"],
        "plan": {**{k: plan[k] for k in keep if k in plan}, "shards": store.redact(plan["shards"])},
        "tags": {"hqjepa.job": "pretrain", "hqjepa.run": store.redact(run_location), "hqjepa.commit": git_commit(ROOT)},
    }


def track_artifacts(run_location: str) -> dict | None:
    """Driver, after `finish`: upload losses.png, summary.json, export.pt and the portable encoder/
    to the MLflow run RUN/mlflow_run.json names, and mark it FINISHED; returns the run record."""
    from hqjepa import tracking
    from hqjepa.runs import storage as store

    where = store.join(run_location, tracking.RUN_FILE)
    if not store.exists(where):
        return None
    run = json.loads(store.read_bytes(where))
    names = ("losses.png", "summary.json", EXPORT_FILE, "encoder")  # encoder/: the portable artifact
    with tempfile.TemporaryDirectory(prefix="hqjepa-mlflow-") as tmp:
        if store.is_uri(run_location):  # an object store: fetched to a local folder first
            found = [n for n in names if store.exists(store.join(run_location, n))]
            paths = [store.download(store.join(run_location, n), Path(tmp) / n) for n in found]
        else:
            paths = [Path(run_location) / n for n in names]
        tracking.log_artifacts(run, [p for p in paths if p.exists()])
    tracking.end_run(run, "FINISHED")
    return run


def finish(result, run_location: str, name: str, seconds: float, title: str) -> dict:
    """Copy the final checkpoint's artifacts into the run directory; plot the losses. On an object
    store the artifacts are made in a local folder and uploaded to the run's prefix."""
    from hqjepa.plotting import plot_losses
    from hqjepa.runs import storage as store

    latest = result.checkpoint
    summary = {
        "event": "done",
        "run": name,
        "seconds": round(seconds, 1),
        "run_dir": str(result.path),
        "latest_checkpoint": latest.path if latest else None,
        "best_checkpoints": [c.path for c, _ in (result.best_checkpoints or [])],
        "final_metrics": {
            k: v
            for k, v in (result.metrics or {}).items()
            if k.startswith(("loss", "fqs", "step", "samples", "data_wait"))
        },
    }
    if latest is None:
        return summary
    remote = store.is_uri(run_location)
    with tempfile.TemporaryDirectory(prefix="hqjepa-finish-") as tmp:
        run_dir = Path(tmp) if remote else Path(run_location)
        with latest.as_directory() as d:
            for f in (EXPORT_FILE, "metrics.csv"):
                if (Path(d) / f).exists():
                    shutil.copy(Path(d) / f, run_dir / f)
        if (run_dir / EXPORT_FILE).exists():  # the portable encoder: torch + safetensors, no hqjepa install
            from hqjepa.portable import export_artifact

            export_artifact(run_dir / EXPORT_FILE, run_dir / ARTIFACT_DIR, run=name)
            summary["encoder"] = store.join(run_location, ARTIFACT_DIR)
        if (run_dir / "metrics.csv").exists():
            plot_losses(run_dir / "metrics.csv", run_dir / "losses.png", title=f"HQ-JEPA {title}")
        summary.update(
            export=store.join(run_location, EXPORT_FILE),
            metrics_csv=store.join(run_location, "metrics.csv"),
            plot=store.join(run_location, "losses.png"),
        )
        (run_dir / "summary.json").write_text(json.dumps(store.redact_record(summary), indent=2))
        if remote:  # summary.json last: its presence says the others are there
            for f in (EXPORT_FILE, ARTIFACT_DIR, "metrics.csv", "losses.png", "summary.json"):
                if (run_dir / f).exists():
                    store.upload(run_dir / f, store.join(run_location, f))
    return summary


def resolve_run(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(storage, run name, checkpoint to start from) from --storage, --experiment and --resume.
    --resume takes a local path or a URI (s3://bucket/runs/NAME) of a run directory or a checkpoint."""
    from hqjepa.runs import storage as store

    storage = args.storage or str(ROOT / "runs")
    name = args.experiment or f"pretrain-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.resume:
        return storage, name, None
    resume = args.resume if store.is_uri(args.resume) else str(Path(args.resume).resolve())
    if store.exists(store.join(resume, STATE_FILE)):  # a checkpoint directory: start a new run from it
        return storage, name, resume
    if not store.exists(store.join(resume, SNAPSHOT_FILE)):
        raise ConfigError(
            f"--resume {store.redact(resume)}: neither a run directory (no {SNAPSHOT_FILE}) "
            "nor a checkpoint (no state.pt)"
        )
    parent, run_name = store.split(resume)
    return parent, run_name, None  # a run directory: Ray Train resumes from its snapshot


def run_identity(cfg: Config, args: argparse.Namespace) -> dict:
    """What makes a run this run (RUN_DIR/run.json, `hqjepa.runs.identity`): the whole resolved config
    and the driver settings that change what is trained (workers set the global batch and the data
    split, GPUs the numerics). Left out, as they change how a run executes and not what it
    computes: --cpus-per-worker, --min-workers, --max-failures, --num-cpus, --cache-dir."""
    return {"config": cfg.to_dict(), "run": {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker}}


def claim_run(args: argparse.Namespace, cfg: Config, storage: str, name: str, argv: list[str] | None):
    """Before Ray starts: lock the run name, start over if --force-new, check and write run.json.
    Returns the held lock (release it when the run ends). Raises LockHeld, RunConflict."""
    from hqjepa.runs import storage as store
    from hqjepa.runs.identity import check_identity, clear_run, run_record, write_record
    from hqjepa.runs.lock import lock_for, run_lock_location

    run_dir = store.join(storage, name)
    lock = lock_for(run_lock_location(run_dir), what=f"pretraining run {store.redact(run_dir)}").acquire()
    try:
        if args.force_new:
            moved = clear_run(run_dir)
            print(f"pretrain: --force-new: {name} starts at step 0" + (f"; the old run is {moved}" if moved else ""))
        record = run_record(run_identity(cfg, args), None if argv is None else ["ray_jobs/pretrain.py", *argv])
        record = check_identity(run_dir, record, resume=bool(args.resume) and not args.force_new)
        write_record(run_dir, record)
    except BaseException:
        lock.release()
        raise
    return lock


def build_config(args: argparse.Namespace) -> Config:
    """The run's config: the YAML file, then --set, --max-steps, --data and --fail-at-step."""
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    if args.gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker {args.gpus_per_worker}: must be >= 0")
    if args.min_workers is not None and not 1 <= args.min_workers <= args.workers:
        raise ConfigError(f"--min-workers {args.min_workers}: must be in [1, --workers {args.workers}]")
    if args.force_new and args.resume:
        raise ConfigError("--force-new starts the run over and --resume continues it: give one of them")
    overrides = dict(parse_override(s) for s in args.set)
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    if args.data:
        overrides.update({"data.source": "shards", "data.shards": args.data})
    if args.fail_at_step is not None:
        overrides["train.fail_at_step"] = args.fail_at_step
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Steps 1-2 of the module docstring, then `pretrain`; prints the summary as one JSON line."""
    from hqjepa.runs.identity import RunConflict
    from hqjepa.runs.lock import LockHeld

    args = parse_args(argv)
    try:
        cfg = build_config(args)  # every config error surfaces here, before Ray starts
        storage, name, resume_from = resolve_run(args)
        tracking = tracking_from_flags(args.mlflow, args.mlflow_experiment)  # mlflow missing: an error here
        lock = claim_run(args, cfg, storage, name, argv)  # so do another live run and other settings
    except (ConfigError, RunConflict, LockHeld) as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
    try:
        start_ray(args.num_cpus)
        summary = pretrain(
            cfg,
            storage=storage,
            name=name,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            max_failures=args.max_failures,
            resume_from=resume_from,
            cache_dir=Path(args.cache_dir),
            title=Path(args.config).stem,
            min_workers=args.min_workers,
            tracking=tracking,
        )
    except ConfigError as e:  # found once the data is known (a split with no rows, too few rows)
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    from hqjepa.runs.storage import redact_record

    print(json.dumps(redact_record(summary)), flush=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `ray_jobs/pretrain.py` (and `hqjepa pretrain`)."""
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/tiny.yaml"))
    p.add_argument("--data", help="directory (or pyarrow URI) of converted shards; default: the config's data section")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data-parallel ranks)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="default: the cluster's CPUs minus one for Ray Data, shared by the workers (0.5 to 4)",
    )
    p.add_argument(
        "--min-workers",
        type=int,
        default=None,
        help="elastic: after a node is lost, continue with as few as this many workers (default: --workers)",
    )
    p.add_argument(
        "--resume",
        help="a run directory (continue it, also with other settings) or a checkpoint directory (start from it); "
        "a path or a URI",
    )
    p.add_argument(
        "--experiment",
        help="run name under the storage path (default: pretrain-<config>-<time>); an existing name with the "
        "same settings continues, with other settings it is refused",
    )
    p.add_argument(
        "--force-new",
        action="store_true",
        help="start the run over at step 0 under an existing name (its old directory is moved aside, or "
        "deleted on an object store)",
    )
    p.add_argument("--storage", help="where runs live: a local path, NFS or s3://... (default: ./runs)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts before the run fails")
    p.add_argument("--fail-at-step", type=int, default=None, help="fault injection: one worker fails once at this step")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded Ray (default: all)")
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "data"), help="where synthetic shards are cached")
    add_tracking_args(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (checked like the YAML)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
