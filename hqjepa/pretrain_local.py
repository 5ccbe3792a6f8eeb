"""Pretrain HQ-JEPA in one process on synthetic S1/S2 pairs (no Ray, no files to download).

    python -m hqjepa.pretrain_local --config configs/tiny.yaml --out runs/tiny [--max-steps N]
                                    [--set section.key=value ...] [--resume] [--device cpu|cuda|auto]

Writes to --out: metrics.csv (every step: the four losses, the FQS collapse gap, lr, EMA momentum,
samples/s, data-wait fraction), tensorboard/, checkpoint.pt (training state, every
`train.checkpoint_every` steps and at the end), export.pt (the encoder `train.export_encoder`
names, the EMA teacher by default, for evaluation, with the band statistics it was trained with),
encoder/ (the same encoder as a portable artifact, model.safetensors + config.json:
`hqjepa.load_pretrained`), losses.png (the four loss curves) and config.yaml. The data order and
the masks are seeded per epoch, so `--resume` continues exactly where the run stopped.
`--device cuda` trains on the GPU: the model is built on the CPU first, so `optim.seed` gives the
same initial weights, scenes, order and masks on either device (with `optim.precision: fp32`
cuDNN's TF32 is switched off too, so fp32 means fp32; `auto` is bf16 there).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hqjepa.checkpoint import export_trained_encoder, load_training_state, save_training_state
from hqjepa.config import Config, load_config, parse_override, save_config
from hqjepa.engine import Trainer
from hqjepa.loop import FaultInjector, run_steps
from hqjepa.models.hqjepa import HQJEPA
from hqjepa.plotting import plot_losses
from hqjepa.portable import export_artifact
from hqjepa.runlog import RunLog


@functools.lru_cache(maxsize=2)
def _synthetic_pairs(n: int, seed: int, max_classes: int):
    from hqjepa.data.dataset import SyntheticPairs

    return SyntheticPairs(n, seed=seed, max_classes=max_classes)  # rendered once per run


def synthetic_loader(cfg: Config, epoch: int):
    """The epoch's batches: a seeded shuffle of the synthetic pairs (the first steps_per_epoch
    global batches of it; more than one pass when steps_per_epoch asks for more) and seeded masks."""
    from hqjepa.data.collate import MaskCollator

    dataset = _synthetic_pairs(cfg.data.synthetic_pairs, cfg.optim.seed, cfg.data.synthetic_classes)
    g = torch.Generator().manual_seed(cfg.optim.seed * 100_003 + epoch)
    # Draw exactly the epoch's samples: with train.steps_per_epoch below len(dataset) / batch, a
    # full shuffle would render (and the loop drain) batches no step uses. With num_samples = the
    # whole dataset this is DataLoader(shuffle=True)'s own sampler, the same order.
    used = steps_per_epoch(cfg, len(dataset)) * cfg.optim.batch_size * cfg.optim.accumulation
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=used, generator=g)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        generator=g,
        drop_last=True,
        collate_fn=MaskCollator(cfg.mask, cfg.model.grid, seed=cfg.optim.seed * 100_003 + epoch),
        num_workers=0,
    )


def steps_per_epoch(cfg: Config, pairs: int) -> int:
    """`train.steps_per_epoch`, or the global batches (batch_size x accumulation) `pairs` fill;
    ValueError when that is 0."""
    global_batch = cfg.optim.batch_size * cfg.optim.accumulation
    spe = cfg.train.steps_per_epoch or pairs // global_batch
    if spe < 1:
        raise ValueError(
            f"{pairs} pairs do not fill one global batch of {global_batch} (optim.batch_size x optim.accumulation)"
        )
    return spe


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda[:i]` or `auto` (CUDA when visible); a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r}: not a device (cpu, cuda, cuda:<i> or auto)") from None
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name!r}: pretrain_local trains on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name!r}: no CUDA device is visible (torch.cuda.is_available() is False)")
    return device


def main(args: argparse.Namespace) -> int:
    """Run `python -m hqjepa.pretrain_local` (module docstring); prints a JSON summary and returns 0."""
    overrides = dict(parse_override(s) for s in args.set)
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    cfg = load_config(args.config, overrides)
    if cfg.data.source != "synthetic":
        raise SystemExit(
            "pretrain_local trains on synthetic pairs only (data.source: synthetic); "
            "use ray_jobs/pretrain.py for Parquet shards"
        )
    device = resolve_device(args.device)
    torch.manual_seed(cfg.optim.seed)
    np.random.seed(cfg.optim.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    model = HQJEPA(cfg)  # on the CPU, so that the seed gives the same weights on any device
    if device.type == "cuda" and cfg.optim.precision == "fp32":
        torch.backends.cudnn.allow_tf32 = False  # matmuls are already full fp32 by default
    spe = steps_per_epoch(cfg, cfg.data.synthetic_pairs)
    trainer = Trainer(model.to(device), cfg, spe, device)
    ckpt = out / "checkpoint.pt"
    if args.resume and ckpt.exists():
        load_training_state(ckpt, trainer)
        print(f"resumed from {ckpt} at step {trainer.step}", file=sys.stderr)
    max_steps = min(cfg.train.max_steps or trainer.total_steps, trainer.total_steps)
    log = RunLog(out, resume_step=trainer.step if args.resume else None)

    from tqdm import tqdm

    bar = tqdm(
        total=max_steps, initial=trainer.step, desc="pretrain", unit="step", dynamic_ncols=True, disable=args.quiet
    )

    def on_step(metrics: dict[str, float]) -> None:
        log.log(trainer.step - 1, metrics)
        bar.update(1)
        bar.set_postfix(
            {k[5:]: f"{metrics[k]:.3g}" for k in ("loss_pred", "loss_cm", "loss_sig", "loss_fqs") if k in metrics}
        )
        if trainer.step % cfg.train.checkpoint_every == 0 or trainer.step == max_steps:
            save_training_state(ckpt, trainer)

    try:
        run_steps(
            trainer,
            lambda epoch: synthetic_loader(cfg, epoch),
            max_steps,
            on_step,
            FaultInjector(cfg.train.fail_at_step, out / ".fault_injected"),
        )
    finally:
        bar.close()
        log.close()
    stats = _synthetic_pairs(cfg.data.synthetic_pairs, cfg.optim.seed, cfg.data.synthetic_classes).stats
    export_trained_encoder(out / "export.pt", trainer.core, cfg, {"step": trainer.step}, stats=stats)
    export_artifact(out / "export.pt", out / "encoder", run=str(out))
    plot_losses(out / "metrics.csv", out / "losses.png", title=f"HQ-JEPA {Path(args.config).stem}")
    summary = {
        "steps": trainer.step,
        "skipped_steps": trainer.skipped_steps,
        "run_dir": str(out),
        "checkpoint": str(ckpt),
        "export": str(out / "export.pt"),
        "encoder": str(out / "encoder"),
        "plot": str(out / "losses.png"),
    }
    print(json.dumps(summary))
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of `python -m hqjepa.pretrain_local`."""
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--out", default="runs/local")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (checked like the YAML)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:<i> or auto (cuda when visible); optim.precision auto is bf16 on cuda",
    )


if __name__ == "__main__":
    from hqjepa.cli import ArgumentParser, run_command

    parser = ArgumentParser(prog="python -m hqjepa.pretrain_local", description=__doc__.splitlines()[0])
    configure_parser(parser)
    raise SystemExit(run_command(parser.prog, main, parser.parse_args()))
