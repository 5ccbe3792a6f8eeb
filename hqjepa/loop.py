"""The step loop shared by the one-process run and the Ray Train workers.

`run_steps` drives a `Trainer` from its current step to `max_steps`, pulling `accumulation`
micro-batches per step from `epoch_batches(epoch)`. After a resume at step s it skips the
(s mod steps_per_epoch) * accumulation micro-batches the interrupted run had already consumed in
that epoch, so with a deterministic data order no step is lost or repeated. It measures how long
each step waited for data, and calls `on_step(metrics)` after every step (logging, checkpoints).
An epoch that yields fewer than `steps_per_epoch` steps is an error: the step count would drift
from the data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from hqjepa.engine import Trainer


class InjectedFault(RuntimeError):
    """Raised by the fault-injection hook (train.fail_at_step / HQJEPA_FAIL_AT_STEP)."""


class FaultInjector:
    """Fails once at a given step, to exercise recovery. The marker file (in the run directory, so
    it survives a worker restart) makes the fault fire only once per run. Mode "raise" raises an
    exception in the worker; mode "exit" kills the process outright (os._exit), like an OOM kill."""

    def __init__(self, step: int | None, marker: Path | str | None, mode: str = "raise") -> None:
        env_step = os.environ.get("HQJEPA_FAIL_AT_STEP")
        self.step = int(env_step) if env_step not in (None, "") else step
        self.mode = os.environ.get("HQJEPA_FAIL_MODE", mode)
        self.marker = marker

    def check(self, step: int) -> None:
        """Fire the fault if `step` is the configured step and the run's marker file does not exist yet
        (writing the marker first): raise InjectedFault, or in mode "exit" end the process with status 137."""
        if self.step is None or step != self.step:
            return
        if self.marker is not None:  # a path, or a URI for a run on an object store
            from hqjepa.runs import storage

            if storage.exists(self.marker):
                return
            storage.write_bytes(self.marker, f"fault injected at step {step}\n".encode())
        if self.mode == "exit":
            os._exit(137)
        raise InjectedFault(f"fault injected at step {step} (train.fail_at_step / HQJEPA_FAIL_AT_STEP)")


def run_steps(
    trainer: Trainer,
    epoch_batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    max_steps: int,
    on_step: Callable[[dict[str, float]], None],
    fault: FaultInjector | None = None,
) -> None:
    """Train until `trainer.step == max_steps` (see module docstring)."""
    acc = trainer.cfg.optim.accumulation
    spe = trainer.steps_per_epoch
    while trainer.step < max_steps:
        epoch, offset = divmod(trainer.step, spe)
        it: Iterator = iter(epoch_batches(epoch))
        try:
            for _ in range(offset * acc):
                next(it)
        except StopIteration:
            raise RuntimeError(
                f"epoch {epoch} has fewer than {offset * acc} micro-batches to skip on resume; "
                f"steps_per_epoch={spe} does not match the data"
            ) from None
        for _ in range(offset, spe):
            if trainer.step >= max_steps:
                return
            t0 = time.perf_counter()
            try:
                micro = [next(it) for _ in range(acc)]
            except StopIteration:
                raise RuntimeError(
                    f"epoch {epoch} ran out of data after {trainer.step - epoch * spe} of {spe} steps; "
                    "steps_per_epoch does not match the data source"
                ) from None
            wait = time.perf_counter() - t0
            if fault is not None:
                fault.check(trainer.step)
            step = trainer.step
            metrics = trainer.train_step(micro)
            busy = metrics["step_time_s"]
            metrics.update(
                step=float(step),
                epoch=float(epoch),
                data_wait_s=wait,
                data_wait_fraction=wait / max(wait + busy, 1e-9),
                samples_per_s=metrics["samples"] / max(wait + busy, 1e-9),
            )
            on_step(metrics)
        for _ in it:  # drain the epoch's remainder so a streaming split can start the next epoch
            pass
