"""Typed run configuration, loaded from YAML and checked before any work starts.

A config has six sections (model, mask, loss, optim, data, train), each a dataclass. Every field
carries its allowed range in its metadata; `load_config` rejects unknown keys, wrong types and
out-of-range values with one `ConfigError` that names the dotted key and what is allowed, e.g.

    mask.target_scale[1] = 1.5: must be in (0, 1]

Overrides (from the command line or a Tune trial) use the same dotted keys and the same checks:
`apply_overrides(cfg, {"mask.num_targets": 2, "model.depth": 6})`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from hqjepa.bands import S1_BANDS, S2_BANDS


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the dotted key and the allowed values."""


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader reading numbers as people write them: `1e-3`, `5e-4` and `2E5` are floats.

    PyYAML implements YAML 1.1, whose float syntax needs a dot and a signed exponent (`1.0e-3`), so
    it reads `1e-3` as the string '1e-3'; YAML 1.2 and every other parser read a number. `.5` was
    already a float. Used for config files, `--set` overrides, eval overrides and search spaces.
    """


# Copy the resolver table before adding to it: SafeLoader's own table stays untouched.
YAMLLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with `YAMLLoader` (safe; exponent floats without a dot are numbers)."""
    return yaml.load(text, Loader=YAMLLoader)  # safe: YAMLLoader is a SafeLoader


# --- range metadata -------------------------------------------------------------------------------


def _f(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: tuple | None = None,
    pair: bool = False,
    doc: str = "",
) -> Any:
    """A dataclass field with its allowed range (inclusive unless *_open) or set of choices;
    `pair=True` marks a [low, high] range, whose ends must be in order."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "pair": pair, "doc": doc}
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _range_text(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    left = "(" if meta.get("lo_open") else "["
    right = ")" if meta.get("hi_open") else "]"
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    if lo is None:
        left = "("
    if hi is None:
        right = ")"
    return f"in {left}{lo_s}, {hi_s}{right}"


def _check_range(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    if meta.get("choices") is not None:
        if value not in meta["choices"]:
            raise ConfigError(f"{key} = {value!r}: must be {_range_text(meta)}")
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: must be a finite number {_range_text(meta)}")
        lo, hi = meta.get("lo"), meta.get("hi")
        bad = (lo is not None and (value <= lo if meta.get("lo_open") else value < lo)) or (
            hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
        )
        if bad:
            raise ConfigError(f"{key} = {value!r}: must be {_range_text(meta)}")


# --- sections ---------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Hybrid Mamba-ViT sizes. The first `mamba_layers` blocks are bidirectional Mamba mixers."""

    image_size: int = _f(120, lo=8, doc="S2 image side in px at 10 m")
    patch_size: int = _f(10, lo=1)
    s2_bands: tuple[str, ...] = _f(S2_BANDS)
    s1_bands: tuple[str, ...] = _f(S1_BANDS)
    embed_dim: int = _f(384, lo=8)
    depth: int = _f(8, lo=1)
    mamba_layers: int | None = _f(None, lo=0, doc="default: depth // 2 (first half)")
    num_heads: int = _f(6, lo=1)
    mlp_ratio: float = _f(4.0, lo=0, lo_open=True)
    d_state: int = _f(16, lo=1)
    d_conv: int = _f(4, lo=1)
    expand: int = _f(2, lo=1)
    mamba_backend: str = _f("auto", choices=("auto", "torch", "cuda"))
    predictor_embed_dim: int = _f(192, lo=8)
    predictor_depth: int = _f(4, lo=1)
    predictor_heads: int = _f(6, lo=1)
    s1_embed_dim: int = _f(192, lo=8)
    s1_depth: int = _f(2, lo=1)
    s1_heads: int = _f(3, lo=1)
    fusion_heads: int = _f(4, lo=1)
    fqs_enc_layers: int = _f(2, lo=1, doc="L_enc: encoding layers per register")
    fqs_pred_layers: int = _f(1, lo=0, doc="L_pred: predictor layers on the student register")

    @property
    def grid(self) -> int:
        """Patches per side: image_size / patch_size."""
        return self.image_size // self.patch_size

    @property
    def n_mamba(self) -> int:
        """Mamba blocks at the start of the encoder (`mamba_layers`, default the first half)."""
        return self.depth // 2 if self.mamba_layers is None else self.mamba_layers


@dataclass
class MaskConfig:
    """I-JEPA multiblock masking on the patch grid (scales are fractions of the grid's patches)."""

    num_targets: int = _f(4, lo=1, hi=16)
    target_scale: tuple[float, float] = _f((0.15, 0.2), lo=0, hi=1, lo_open=True, pair=True)
    target_aspect: tuple[float, float] = _f((0.75, 1.5), lo=0, lo_open=True, pair=True)
    context_scale: tuple[float, float] = _f((0.85, 1.0), lo=0, hi=1, lo_open=True, pair=True)
    context_aspect: tuple[float, float] = _f((1.0, 1.0), lo=0, lo_open=True, pair=True)
    min_keep: int = _f(10, lo=1, doc="fewest context patches a sample may keep")
    allow_overlap: bool = _f(False)
    max_tries: int = _f(20, lo=1, doc="redraws of the context block before falling back")


@dataclass
class LossConfig:
    """Objective L = L_pred + w_cm L_cm + w_sig L_sig + w_fqs L_fqs, fixed or adaptive weights."""

    weighting: str = _f(
        "fixed",
        choices=("fixed", "uncertainty", "dwa", "gradnorm"),
        doc="fixed weights (the paper) or an adaptive scheme started from them "
        "(losses/weighting.py); gradnorm makes w_i each term's gradient on the encoder "
        "relative to L_pred's",
    )
    w_cm: float = _f(1.0, lo=0)
    w_sig: float = _f(0.05, lo=0)
    w_fqs: float = _f(0.1, lo=0)
    w_sig_ctx: float = _f(0.0, lo=0, doc="SIGReg on the student's context embeddings too; 0 = the paper's objective")
    sig_ctx_on: str = _f(
        "tokens",
        choices=("tokens", "pooled"),
        doc="what w_sig_ctx regularises: every valid context token, or each sample's mean "
        "context token (LeJEPA regularises per-image embeddings)",
    )
    w_pix: float = _f(
        0.0,
        lo=0,
        doc="also predict each target patch's band means and log-stds (MaskFeat-style "
        "texture target, losses/pixel_stats.py); 0 = the paper's objective",
    )
    pix_on: str = _f(
        "targets",
        choices=("targets", "context"),
        doc="where w_pix reads: the predictor's target tokens (predict from context) or the "
        "student's own context tokens (describe the patch it sees)",
    )
    target_blocks: int = _f(
        1,
        lo=1,
        doc="prediction targets: the teacher's last block (1, I-JEPA) or the mean of "
        "its last K blocks' layer-normed tokens (data2vec)",
    )
    smooth_l1_beta: float = _f(1.0, lo=0, lo_open=True)
    cm_loss: str = _f("smooth_l1", choices=("smooth_l1", "mse"))
    sigreg_slices: int = _f(256, lo=1)
    sigreg_knots: int = _f(17, lo=3)
    sigreg_t_max: float = _f(3.0, lo=0, lo_open=True)
    fqs_backend: str = _f("statevector", choices=("statevector", "pennylane", "pennylane_broadcast"))
    fqs_device: str = _f("default.qubit", doc="PennyLane device name for the reference backend")
    fqs_mode: str = _f(
        "paper",
        choices=("paper", "siamese"),
        doc="paper: the paper's L_fqs, which collapses (docs/method.md Sec. 7); siamese: both registers "
        "from the context projection (teacher side without gradient), angles standardised over the "
        "batch, so no input-independent state exists (quantum/head.py)",
    )
    fqs_angle_scale: float = _f(0.5, lo=0, lo_open=True, doc="siamese: angles are pi tanh(scale * standardised)")
    dwa_temperature: float = _f(2.0, lo=0, lo_open=True)
    max_nonfinite_steps: int = _f(5, lo=1, doc="consecutive skipped steps before the run stops")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (lr and weight decay), EMA momentum ramp."""

    batch_size: int = _f(512, lo=1, doc="per worker, per micro-step")
    accumulation: int = _f(1, lo=1)
    epochs: int = _f(400, lo=1)
    warmup_epochs: float = _f(30, lo=0)
    start_lr: float = _f(2e-4, lo=0)
    lr: float = _f(1e-3, lo=0, lo_open=True)
    final_lr: float = _f(1e-6, lo=0)
    weight_decay: float = _f(0.04, lo=0)
    final_weight_decay: float = _f(0.4, lo=0)
    betas: tuple[float, float] = _f((0.9, 0.999), lo=0, hi=1, hi_open=True)
    grad_clip: float = _f(1.0, lo=0, doc="max global grad norm; 0 disables")
    ema: tuple[float, float] = _f((0.996, 1.0), lo=0, hi=1, doc="teacher momentum at the start and the end")
    precision: str = _f("auto", choices=("auto", "fp32", "bf16"))
    compile: bool | str = _f(
        False,
        choices=(False, True, "auto"),
        doc="torch.compile the encoders, predictor, fusion and heads (not the FQS simulator); "
        "auto: on CUDA only (on the CPU it does not pay: docs/performance.md)",
    )
    seed: int = _f(0, lo=0)


@dataclass
class DataConfig:
    """Where pairs come from: a synthetic generator or converted Parquet shards."""

    source: str = _f("synthetic", choices=("synthetic", "shards"))
    shards: str | None = _f(None, doc="directory of Parquet shards with _manifest.json")
    synthetic_pairs: int = _f(512, lo=1)
    synthetic_classes: int = _f(6, lo=1, hi=19, doc="land-cover classes drawn per scene, at most")
    split: str | None = _f("train", doc="manifest split to train on; null = every row")
    shuffle_buffer: int = _f(256, lo=0, doc="rows in Ray Data's local shuffle buffer (0: no shuffle)")
    loader_workers: int = _f(0, lo=0)
    deterministic: bool = _f(True, doc="fixed data order per (seed, epoch): exact resume, slower streaming")
    prefetch_batches: int = _f(2, lo=0, doc="batches Ray Data prepares ahead of the training step")


@dataclass
class TrainConfig:
    """Run length and bookkeeping."""

    max_steps: int | None = _f(None, lo=1, doc="stop after this many optimiser steps")
    steps_per_epoch: int | None = _f(None, lo=1, doc="default: pairs // global batch")
    report_every: int = _f(1, lo=1, doc="steps between ray.train.report calls (CSV/TensorBoard log every step)")
    checkpoint_every: int = _f(50, lo=1)
    keep_checkpoints: int = _f(2, lo=1)
    fail_at_step: int | None = _f(None, lo=0, doc="fault injection: raise at this step once")
    export_encoder: str = _f(
        "teacher",
        choices=("teacher", "student"),
        doc="encoder written to export.pt: the EMA target encoder (I-JEPA evaluates it) or the student context encoder",
    )


@dataclass
class Config:
    """A whole run's configuration: one checked dataclass per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain data (tuples as lists), as a YAML file holds it; `config_from_dict` inverts it."""
        return _to_plain(dataclasses.asdict(self))


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


# --- conversion -------------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any, meta: dict) -> Any:
    """Convert a YAML value to the declared type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a, meta)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: must be a {_type_name(tp)}")
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"{key} = {value!r}: must be a {_type_name(tp)}")
            item_types = list(args)
        out = tuple(_coerce(f"{key}[{i}]", v, t, meta) for i, (v, t) in enumerate(zip(value, item_types, strict=True)))
        if meta.get("pair") and out[0] > out[1]:
            raise ConfigError(f"{key} = {list(out)!r}: must be a [low, high] pair with low <= high")
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: must be an integer {_range_text(meta)}")
        _check_range(key, value, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r}: must be a number {_range_text(meta)}")
        value = float(value)
        _check_range(key, value, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(
                f"{key} = {value!r}: must be a string" + (f", {_range_text(meta)}" if meta.get("choices") else "")
            )
        _check_range(key, value, meta)
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _build_section(name: str, cls: type, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name} = {values!r}: must be a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; {name} accepts {', '.join(fields)}")
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key], dict(fields[key].metadata))
    return cls(**kwargs)


def _check_cross_field(cfg: Config) -> None:
    m, k = cfg.model, cfg.mask
    if m.image_size % m.patch_size:
        raise ConfigError(f"model.image_size = {m.image_size}: must be a multiple of model.patch_size ({m.patch_size})")
    if m.n_mamba > m.depth:
        raise ConfigError(f"model.mamba_layers = {m.mamba_layers}: must be in [0, model.depth={m.depth}]")
    if cfg.loss.target_blocks > m.depth:
        raise ConfigError(f"loss.target_blocks = {cfg.loss.target_blocks}: must be in [1, model.depth={m.depth}]")
    for key, dim, heads in (
        ("model.embed_dim", m.embed_dim, m.num_heads),
        ("model.predictor_embed_dim", m.predictor_embed_dim, m.predictor_heads),
        ("model.s1_embed_dim", m.s1_embed_dim, m.s1_heads),
        ("model.embed_dim", m.embed_dim, m.fusion_heads),
    ):
        if dim % heads:
            raise ConfigError(f"{key} = {dim}: must be divisible by its number of heads ({heads})")
    for key, bands, known in (("model.s2_bands", m.s2_bands, S2_BANDS), ("model.s1_bands", m.s1_bands, S1_BANDS)):
        bad = [b for b in bands if b not in known]
        if bad or not bands or len(set(bands)) != len(bands):
            raise ConfigError(f"{key} = {list(bands)!r}: must be distinct names from {list(known)}")
    n = m.grid * m.grid
    if k.min_keep > n:
        raise ConfigError(f"mask.min_keep = {k.min_keep}: must be in [1, {n}] (patches in the grid)")
    if cfg.data.source == "shards" and not cfg.data.shards:
        raise ConfigError("data.shards = null: must name a shard directory when data.source is 'shards'")
    if cfg.optim.warmup_epochs > cfg.optim.epochs:
        raise ConfigError(
            f"optim.warmup_epochs = {cfg.optim.warmup_epochs}: must be in [0, optim.epochs={cfg.optim.epochs}]"
        )


def config_from_dict(raw: Any) -> Config:
    """Build and check a Config from plain data (what YAML gives)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; a config has {', '.join(SECTIONS)}")
    hints = typing.get_type_hints(Config)
    cfg = Config(**{name: _build_section(name, hints[name], raw.get(name)) for name in SECTIONS})
    _check_cross_field(cfg)
    return cfg


def read_yaml(path: str | Path, what: str, error: type[Exception] = ConfigError) -> Any:
    """The parsed YAML of `path`; a missing file or bad YAML raises `error` naming `what` and the path."""
    path = Path(path)
    try:
        return yaml_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config, apply dotted-key overrides, check everything, return a Config."""
    cfg = config_from_dict(read_yaml(path, "config file"))
    return apply_overrides(cfg, overrides) if overrides else cfg


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a new Config with `section.key` values replaced, checked like a YAML file."""
    raw = cfg.to_dict()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(f"{dotted}: overrides are 'section.key' with section one of {', '.join(SECTIONS)}")
        raw[section][key] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(raw)


def parse_override(text: str) -> tuple[str, Any]:
    """`mask.num_targets=2` -> ("mask.num_targets", 2); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    return key.strip(), yaml_load(value)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write `cfg` as a YAML file that `load_config` reads back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
