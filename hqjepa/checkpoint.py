"""Checkpoints and encoder exports: plain `torch.save` of state dicts, read with `weights_only=True`.

Two kinds of file, each tagged with a `format` string:
- training state (`hqjepa-train/1`): the whole model (student, teacher, predictor, S1 branch,
  fusion, FQS head, adaptive weights), optimiser, step counters, RNG states and the config; enough
  to continue a run exactly. Written atomically (temporary file in the same directory + rename).
- encoder export (`hqjepa-encoder/1`): the student encoder's state dict and its config, what
  GeoBench evaluation needs; optionally (`band_stats`, files written before it have none) the
  per-band mean and std its inputs were normalised with, and (`provenance`) the commit, command and
  date of the process that wrote it.

A file from another architecture (different model section) or a truncated file is refused with a
`CheckpointError` that says which.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hqjepa.config import Config, ConfigError, config_from_dict

if TYPE_CHECKING:
    from hqjepa.data.transforms import BandStats

TRAIN_FORMAT = "hqjepa-train/1"
ENCODER_FORMAT = "hqjepa-encoder/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used here; the message names the file and the reason."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: str | Path, expected_format: str, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} has format {found!r}, expected {expected_format!r}")
    return obj


def _config_of(path: Path, obj: dict) -> Config:
    try:
        return config_from_dict(obj["config"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} carries an unusable config: {e}") from None


def check_architecture(path: str | Path, saved: Config, current: Config) -> None:
    """Refuse a checkpoint whose model section differs from the run's."""
    a, b = saved.to_dict()["model"], current.to_dict()["model"]
    diff = [k for k in b if a.get(k) != b.get(k) and k != "mamba_backend"]
    if diff:
        detail = ", ".join(f"model.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in diff[:4])
        raise CheckpointError(f"checkpoint {path} was made by a different architecture ({detail})")


def _load_module_state(path: Path, module: torch.nn.Module, state: dict, what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match the {what}: {first[:300]}") from None


# --- RNG -------------------------------------------------------------------------------------------


def rng_state(np_rng: np.random.Generator | None = None) -> dict:
    """Snapshot of every random generator a resumed run must restore: torch CPU (and CUDA, when present),
    Python's `random`, and `np_rng` if given."""
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if np_rng is not None:
        state["numpy"] = np_rng.bit_generator.state
    return state


def set_rng_state(state: dict, np_rng: np.random.Generator | None = None) -> None:
    """Restore generators from a `rng_state` snapshot (CUDA only if both the snapshot and this machine have it)."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if np_rng is not None and "numpy" in state:
        np_rng.bit_generator.state = state["numpy"]


# --- training state --------------------------------------------------------------------------------


def save_training_state(
    path: str | Path, trainer: Any, extra: dict | None = None, np_rng: np.random.Generator | None = None
) -> None:
    """Everything needed to continue a run: `trainer.state_dict()`, RNG, config, `extra`."""
    atomic_save(
        {
            "format": TRAIN_FORMAT,
            "config": trainer.cfg.to_dict(),
            **trainer.state_dict(),
            "rng": rng_state(np_rng),
            "extra": extra or {},
        },
        path,
    )


def load_training_state(
    path: str | Path, trainer: Any, np_rng: np.random.Generator | None = None, restore_rng: bool = True
) -> dict:
    """Restore a trainer (model, optimiser, counters) and RNG in place; returns `extra`."""
    path = Path(path)
    obj = _load(path, TRAIN_FORMAT, map_location=trainer.device)
    check_architecture(path, _config_of(path, obj), trainer.cfg)
    _load_module_state(path, trainer.core, obj["model"], "model")
    try:
        trainer.load_state_dict(
            {k: obj[k] for k in ("step", "skipped_steps", "consecutive_nonfinite", "model", "optimizer")}
        )
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} does not match the optimiser or counters: {e}") from None
    if restore_rng:
        obj["rng"]["torch"] = obj["rng"]["torch"].cpu()
        set_rng_state(obj["rng"], np_rng)
    return obj.get("extra", {})


# --- encoder export --------------------------------------------------------------------------------


def _git_commit() -> str | None:
    """HEAD of the git checkout this package runs from, with "-dirty" if tracked files changed; None
    outside a checkout or without git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def current_provenance() -> dict:
    """{"commit", "command", "date"} of this process: `hqjepa.provenance.provenance()` where that
    module exists, else the checkout's git commit (None outside one), sys.argv and the UTC time."""
    try:
        from hqjepa.provenance import provenance
    except ImportError:
        return {
            "commit": _git_commit(),
            "command": " ".join(sys.argv),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    return dict(provenance())


def export_encoder(
    path: str | Path, encoder: torch.nn.Module, cfg: Config, extra: dict | None = None, stats: BandStats | None = None
) -> None:
    """Write `encoder` as a plain state dict with its config, `extra` and this process's
    `provenance` (`current_provenance()`), ready for evaluation. `stats`: the per-band mean and std
    its inputs were normalised with, x' = (x - mean_b) / std_b in the units the data is stored in
    (S2: reflectance x 1e4), saved as `band_stats` {band: {"mean", "std"}} so the encoder can be
    used outside this package."""
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    obj = {
        "format": ENCODER_FORMAT,
        "config": cfg.to_dict(),
        "encoder": state,
        "extra": extra or {},
        "provenance": current_provenance(),
    }
    if stats is not None:
        obj["band_stats"] = stats.to_dict()
    atomic_save(obj, path)


def export_trained_encoder(
    path: str | Path, core: torch.nn.Module, cfg: Config, extra: dict | None = None, stats: BandStats | None = None
) -> None:
    """Export the encoder `cfg.train.export_encoder` names from an HQ-JEPA model (`core.teacher`, the
    EMA target encoder, by default: I-JEPA evaluates its target encoder; `core.student` otherwise),
    with the band statistics `stats` the run normalised its inputs with (see `export_encoder`)."""
    which = cfg.train.export_encoder
    export_encoder(path, getattr(core, which), cfg, {**(extra or {}), "encoder": which}, stats)


def load_encoder(
    path: str | Path, map_location: str | torch.device = "cpu", expect: Config | None = None
) -> tuple[torch.nn.Module, Config]:
    """Build the encoder a file describes and load its weights. Accepts an encoder export or a
    training-state checkpoint (the encoder its `train.export_encoder` names: teacher by default).
    `expect` refuses a different architecture."""
    encoder, cfg, _ = load_encoder_with_meta(path, map_location, expect)
    return encoder, cfg


def load_encoder_with_meta(
    path: str | Path, map_location: str | torch.device = "cpu", expect: Config | None = None
) -> tuple[torch.nn.Module, Config, dict]:
    """`load_encoder` plus what else the file carries: {"format": its format tag, "band_stats":
    a BandStats, or None when the file has none (training states, exports from before they were
    recorded), "step": the training step (None if unrecorded), "extra": the export's `extra` dict
    (step, encoder), or a training state's, "provenance": the writing process's commit, command
    and date (None if unrecorded)}. `path` may be a URI (s3://bucket/runs/NAME/export.pt): the file
    is downloaded to a temporary file first (`hqjepa.runs.storage.local_file`)."""
    from hqjepa.data.transforms import BandStats
    from hqjepa.models.encoder import build_encoder
    from hqjepa.runs import storage

    if storage.is_uri(path):  # s3://.../export.pt: read from a temporary local copy
        try:
            with storage.local_file(path) as local:
                return load_encoder_with_meta(local, map_location, expect)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {storage.redact(path)} does not exist") from None
    path = Path(path)
    try:
        obj = _load(path, ENCODER_FORMAT, map_location)
    except CheckpointError as first:
        try:
            obj = _load(path, TRAIN_FORMAT, map_location)
        except CheckpointError:
            raise first from None
    cfg = _config_of(path, obj)
    if obj["format"] == ENCODER_FORMAT:
        state = obj["encoder"]
    else:  # a training state: take the encoder train.export_encoder names out of the whole model
        prefix = cfg.train.export_encoder + "."
        state = {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)}
    if expect is not None:
        check_architecture(path, cfg, expect)
    encoder = build_encoder(cfg.model)
    _load_module_state(path, encoder, state, "encoder its config describes")
    stats, extra = obj.get("band_stats"), dict(obj.get("extra") or {})
    meta = {
        "format": obj["format"],
        "band_stats": BandStats.from_dict(stats) if stats else None,
        "step": obj.get("step", extra.get("step")),
        "extra": extra,
        "provenance": obj.get("provenance"),
    }
    return encoder.to(map_location), cfg, meta
