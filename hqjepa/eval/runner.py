"""One evaluation = (task, protocol, seed, encoder); failures become records that name what failed.

Everything here runs in one process without Ray; `ray_jobs/evaluate.py` only farms these functions
out. A job never raises: a missing band, a corrupt sample file, a checkpoint that does not match the
model, ... is returned as {"status": "error", "error": "<task / protocol / encoder / seed>: <why>"},
so the other jobs of a run still finish and the table reports which cell failed and why.

Encoders: "checkpoint" loads `hqjepa.checkpoint.load_encoder(path, expect=<model config>)`;
"random-init" builds the same architecture with `build_encoder(cfg.model)` under
`torch.manual_seed(run.random_init_seed)`: one fixed random encoder, as the checkpoint is one
fixed trained encoder, so seeds vary the head / fine-tuning only, alike for both. With
`run.random_init_seed: null` seed i draws random encoder i instead, so the baseline's mean and std
cover the spread of random encoders too (what `experiments/learning.py` compares against).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hqjepa.eval.config import EvalConfig, eval_config_from_dict
from hqjepa.eval.dataset import GeoBenchSplit, native_input_size
from hqjepa.eval.geobench import SPLITS, TASKS, GeoBenchTask
from hqjepa.eval.metrics import METRIC_NAMES
from hqjepa.eval.probe import Features, extract_features, finetune, linear_probe
from hqjepa.eval.safe_pickle import GeoBenchFormatError

PROTOCOLS = ("linear", "finetune")
ENCODERS = ("checkpoint", "random-init")


@dataclass
class EvalJob:
    """Plain, picklable description of one evaluation (what a Ray task receives)."""

    task: str
    protocol: str
    seed: int
    encoder: str
    checkpoint: str | None
    benchmark_dir: str
    config: dict
    model_config: str | None = None  # YAML whose model section the checkpoint must match
    device: str | None = None

    @property
    def label(self) -> str:
        """`task / protocol / encoder / seed N`: how records and errors name the job."""
        return f"{self.task} / {self.protocol} / {self.encoder} / seed {self.seed}"

    def eval_config(self) -> EvalConfig:
        """The job's EvalConfig with its task's overrides applied."""
        return eval_config_from_dict(self.config).for_task(self.task)


def _device(job: EvalJob) -> str:
    return job.device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_job_encoder(job: EvalJob) -> tuple[torch.nn.Module, Any]:
    """(encoder, model config section) for the job's encoder kind (module docstring)."""
    from hqjepa.checkpoint import CheckpointError, load_encoder
    from hqjepa.config import load_config
    from hqjepa.models.encoder import build_encoder

    expect = load_config(job.model_config) if job.model_config else None
    if job.encoder == "checkpoint":
        if not job.checkpoint:
            raise CheckpointError("no checkpoint given")
        encoder, cfg = load_encoder(job.checkpoint, map_location="cpu", expect=expect)
        return encoder, cfg.model
    if job.encoder != "random-init":
        raise ValueError(f"unknown encoder {job.encoder!r}; one of {', '.join(ENCODERS)}")
    if expect is not None:
        model_cfg = expect.model
    else:  # the architecture comes from the checkpoint's own config
        if not job.checkpoint:
            raise CheckpointError("the random-init baseline needs --checkpoint or --config for its architecture")
        model_cfg = load_encoder(job.checkpoint, map_location="cpu")[1].model
    fixed = job.eval_config().run.random_init_seed
    torch.manual_seed(job.seed if fixed is None else fixed)
    return build_encoder(model_cfg), model_cfg


def open_splits(
    job: EvalJob, encoder: torch.nn.Module, model_cfg: Any
) -> tuple[GeoBenchTask, dict[str, GeoBenchSplit]]:
    """The task's train/valid/test splits in the encoder's band order and input size."""
    cfg = job.eval_config()
    task = GeoBenchTask(job.benchmark_dir, job.task)
    patch = int(encoder.patch_size)
    native = int((task.specs.patch_size or (task.info.size_px,))[0])
    fixed = cfg.run.segmentation_size if task.info.kind == "segmentation" else cfg.run.classification_size
    size = fixed or native_input_size(native, patch)
    if size % patch:
        raise GeoBenchFormatError(f"{job.task}: input size {size} px is not a multiple of the patch size {patch}")
    bands = tuple(getattr(encoder, "bands", None) or model_cfg.s2_bands)
    first = GeoBenchSplit(
        task, "train", bands, size, cfg.run.partition, cfg.run.max_missing_bands, limit=cfg.run.limit_per_split
    )
    splits = {"train": first}
    for split in SPLITS[1:]:
        splits[split] = GeoBenchSplit(
            task, split, bands, size, cfg.run.partition, mapping=first.mapping, limit=cfg.run.limit_per_split
        )
    return task, splits


def _record(job: EvalJob, **fields: Any) -> dict[str, Any]:
    return {
        "task": job.task,
        "protocol": job.protocol,
        "encoder": job.encoder,
        "seed": job.seed,
        "metric": METRIC_NAMES[TASKS[job.task].kind] if job.task in TASKS else None,
        "checkpoint": job.checkpoint,
        **fields,
    }


def error_record(job: EvalJob, exc: BaseException, seconds: float = 0.0) -> dict[str, Any]:
    """A failed job: the message names the task, protocol, encoder and seed, then the cause."""
    message = f"{job.label}: {type(exc).__name__}: {str(exc).strip() or repr(exc)}"
    return _record(
        job,
        status="error",
        error=message,
        valid=None,
        test=None,
        seconds=round(seconds, 2),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
    )


def feature_seeds(encoder: str, seeds: list[int], config: dict) -> dict[int, int]:
    """For each linear-probe seed, the seed whose extracted features it probes.

    One fixed encoder (the checkpoint; random-init with a fixed `run.random_init_seed`): every seed
    shares the first seed's features. With `run.random_init_seed: null` each seed has its own
    random encoder, so its own features.
    """
    per_seed = encoder == "random-init" and config["run"]["random_init_seed"] is None
    return {seed: seed if per_seed else seeds[0] for seed in seeds}


def run_extract(job: EvalJob) -> Features | dict[str, Any]:
    """Frozen features of the job's task (shared by the linear jobs of every seed), or an error record."""
    t0 = time.time()
    try:
        encoder, model_cfg = load_job_encoder(job)
        task, splits = open_splits(job, encoder, model_cfg)
        cfg = job.eval_config()
        return extract_features(
            encoder,
            splits,
            task.info.kind,
            task.n_classes,
            cfg.linear.extract_batch_size,
            cfg.run.num_workers,
            _device(job),
            cfg.linear.feature_blocks,
        )
    except Exception as exc:  # reported, never raised: the other tasks go on
        return error_record(job, exc, time.time() - t0)


def run_linear(job: EvalJob, features: Features | dict[str, Any]) -> dict[str, Any]:
    """Linear probing on extracted features (an error record from extraction is passed on)."""
    if isinstance(features, dict):
        return {**features, "seed": job.seed, "protocol": job.protocol}
    t0 = time.time()
    try:
        cfg = job.eval_config().linear
        out = linear_probe(features, cfg.lrs, cfg.epochs, cfg.weight_decay, cfg.batch_size, job.seed, _device(job))
        sizes = {f"n_{s}": int(len(features.y[s])) for s in SPLITS}
        return _record(job, status="ok", error=None, seconds=round(time.time() - t0, 2), **out, **sizes)
    except Exception as exc:
        return error_record(job, exc, time.time() - t0)


def run_finetune(job: EvalJob) -> dict[str, Any]:
    """Fine-tune the job's encoder with a head on its task; an ok record with the scores, or an error record."""
    t0 = time.time()
    try:
        encoder, model_cfg = load_job_encoder(job)
        task, splits = open_splits(job, encoder, model_cfg)
        cfg = job.eval_config()
        ft = cfg.finetune
        out = finetune(
            encoder,
            splits,
            task.info.kind,
            task.n_classes,
            epochs=ft.epochs,
            lr=ft.lr,
            encoder_lr_scale=ft.encoder_lr_scale,
            weight_decay=ft.weight_decay,
            batch_size=ft.batch_size,
            warmup_epochs=ft.warmup_epochs,
            grad_clip=ft.grad_clip,
            seed=job.seed,
            num_workers=cfg.run.num_workers,
            device=_device(job),
        )
        sizes = {f"n_{s}": len(splits[s]) for s in SPLITS}
        return _record(job, status="ok", error=None, seconds=round(time.time() - t0, 2), **out, **sizes)
    except Exception as exc:
        return error_record(job, exc, time.time() - t0)


def run_job(job: EvalJob) -> dict[str, Any]:
    """Any single job in-process (linear jobs extract their own features)."""
    if job.protocol == "linear":
        return run_linear(job, run_extract(job))
    if job.protocol == "finetune":
        return run_finetune(job)
    return error_record(job, ValueError(f"unknown protocol {job.protocol!r}; one of {', '.join(PROTOCOLS)}"))


def job_dict(job: EvalJob) -> dict[str, Any]:
    """The job as a plain dict (its dataclass fields)."""
    return asdict(job)
