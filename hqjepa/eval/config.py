"""Evaluation settings (configs/eval.yaml): seeds, epochs, learning rates per protocol.

Sections: `run` (seeds, partition, sizes, band rule), `linear` (linear probing), `finetune`
(fine-tuning), and optional `tasks: {<task>: {linear: {...}, finetune: {...}}}` overrides. Unknown
keys, wrong types and out-of-range values raise `ConfigError` naming the dotted key, as the run
config does (same checker, `hqjepa.config`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hqjepa.config import ConfigError, _build_section, _f, parse_override, read_yaml
from hqjepa.eval.geobench import TASKS


@dataclass
class RunSection:
    """Which runs an evaluation makes and how it reads the tasks: seeds, partition, missing bands,
    the random-init baseline's seed, input sizes, sample limit, DataLoader workers."""

    seeds: tuple[int, ...] = _f((0, 1, 2), lo=0, doc="one run per seed; mean +- std reported")
    partition: str = _f("default", doc="GeoBench partition file <name>_partition.json")
    max_missing_bands: int = _f(2, lo=0, doc="encoder bands a task may lack (filled with the band mean)")
    random_init_seed: int | None = _f(
        0,
        lo=0,
        doc="torch seed of the random-init baseline encoder; null = the job's seed (seed i probes random encoder i)",
    )
    classification_size: int | None = _f(None, lo=1, doc="input px; null = native rounded to the patch")
    segmentation_size: int | None = _f(None, lo=1, doc="input px; null = native rounded to the patch")
    limit_per_split: int | None = _f(None, lo=1, doc="use at most this many samples per split")
    num_workers: int = _f(0, lo=0, doc="DataLoader workers per evaluation")


@dataclass
class LinearSection:
    """Frozen encoder, features extracted once; a linear head per lr, best (lr, epoch) on valid."""

    epochs: int = _f(100, lo=1)
    lrs: tuple[float, ...] = _f((1e-3, 3e-3, 1e-2, 3e-2, 1e-1), lo=0, lo_open=True)
    weight_decay: float = _f(0.0, lo=0)
    batch_size: int = _f(256, lo=1)
    extract_batch_size: int = _f(32, lo=1)
    feature_blocks: int = _f(
        1,
        lo=1,
        doc="probe the last N blocks' normed tokens, concatenated (1: the encoder's output; DINO's ViT-S probe used 4)",
    )


@dataclass
class FinetuneSection:
    """Encoder unfrozen at lr * encoder_lr_scale; head at lr; warm-up then cosine; best epoch on valid."""

    epochs: int = _f(30, lo=1)
    lr: float = _f(1e-3, lo=0, lo_open=True)
    encoder_lr_scale: float = _f(0.1, lo=0, hi=1)
    weight_decay: float = _f(0.05, lo=0)
    batch_size: int = _f(32, lo=1)
    warmup_epochs: float = _f(1.0, lo=0)
    grad_clip: float = _f(1.0, lo=0, doc="0 disables")


@dataclass
class EvalConfig:
    """A whole evaluation config: the run, linear and finetune sections, and per-task overrides of the
    linear / finetune sections (`tasks: {task: {linear: {...}, finetune: {...}}}`)."""

    run: RunSection = field(default_factory=RunSection)
    linear: LinearSection = field(default_factory=LinearSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_task(self, task: str) -> EvalConfig:
        """This config with the task's overrides applied (linear/finetune keys)."""
        over = self.tasks.get(task) or {}
        if not over:
            return self
        raw = self.to_dict()
        for section, values in over.items():
            raw[section].update(values)
        raw["tasks"] = {}
        return eval_config_from_dict(raw)

    def to_dict(self) -> dict:
        """The config as plain dicts and lists (tuples become lists), as YAML and `eval_config_from_dict` take it."""

        def plain(o: Any) -> Any:
            if isinstance(o, dict):
                return {k: plain(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [plain(v) for v in o]
            return o

        return plain(dataclasses.asdict(self))


_SECTIONS = {"run": RunSection, "linear": LinearSection, "finetune": FinetuneSection}


def eval_config_from_dict(raw: Any) -> EvalConfig:
    """Build and check an EvalConfig from a raw mapping (None: every default).

    Unknown sections, keys, tasks and out-of-range values raise ConfigError; run.seeds and
    linear.lrs are taken as sets and sorted; each task override is checked on its merged section."""
    raw = copy.deepcopy(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"eval config must be a mapping of sections ({', '.join(_SECTIONS)}, tasks)")
    unknown = sorted(set(raw) - set(_SECTIONS) - {"tasks"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; an eval config has {', '.join(_SECTIONS)}, tasks")
    # seeds and lrs are sets (order carries no meaning); sorted, since the shared checker reads a
    # two-element list as a [low, high] range
    seeds = (raw.get("run") or {}).get("seeds")
    if isinstance(seeds, list) and (not seeds or len(set(map(repr, seeds))) != len(seeds)):
        raise ConfigError(f"run.seeds = {seeds!r}: must be a non-empty list of distinct integers >= 0")
    for section, key in (("run", "seeds"), ("linear", "lrs")):
        values = (raw.get(section) or {}).get(key)
        if isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raw[section][key] = sorted(set(values))
    sections = {name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    tasks = raw.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise ConfigError("tasks: must map task names to {linear: {...}, finetune: {...}}")
    for task, over in tasks.items():
        if task not in TASKS:
            raise ConfigError(f"tasks.{task}: unknown task; known: {', '.join(TASKS)}")
        if not isinstance(over, dict) or set(over) - {"linear", "finetune"}:
            raise ConfigError(f"tasks.{task}: overrides only the linear and finetune sections")
        for section, values in over.items():  # check the values by building the merged section
            merged = {**dataclasses.asdict(sections[section]), **(values or {})}
            _build_section(f"tasks.{task}.{section}", _SECTIONS[section], merged)
    return EvalConfig(**sections, tasks=tasks)


def load_eval_config(path: str | Path) -> EvalConfig:
    """`eval_config_from_dict` of a YAML file."""
    return eval_config_from_dict(read_yaml(path, "eval config"))


def apply_eval_overrides(raw: dict[str, Any], texts: list[str], flag: str = "--set") -> dict[str, Any]:
    """Apply `run|linear|finetune.KEY=VALUE` overrides (command-line text) to a raw eval config, in place;
    anything else raises a ConfigError naming `flag` (values are checked when the config is built)."""
    for text in texts:
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        if section not in ("run", "linear", "finetune") or not name:
            raise ConfigError(f"{flag} {text}: expected run|linear|finetune.KEY=VALUE")
        raw[section][name] = value
    return raw
