"""A search space in YAML: a distribution per config key, checked against the run config first.

File layout (tune_spaces/*.yaml):

    metric: geobench/m-eurosat/linear    # optional: the default of --metric (a list: their mean)
    mode: max                            # optional: max (default) or min
    params:                              # sampled by an Optuna sampler (TPE by default) ...
      section.key: DISTRIBUTION
    grid:                                # ... or run as an explicit grid (Optuna's GridSampler)
      default: {section.key: value}      #     the point every other point starts from
      one_at_a_time: {section.key: [value, ...]}   # vary one key at a time from the default
      points: {name: {section.key: value}}         # further explicit points

DISTRIBUTION is one of
    {uniform: [low, high]}                 a float, low < high
    {loguniform: [low, high]}              a float, 0 < low < high, drawn uniformly in log space
    {int: [low, high]} or {int: [low, high], step: s}   an integer low, low + s, ..., high
    {choice: [v1, v2, ...]}                any config values, e.g. [[0.75, 1.5], [0.5, 2.0]] for a range key
    {pair: {low: D, high: D}}              a [low, high] range key whose ends are drawn separately
                                           (D: uniform, loguniform, int or a number); every draw of
                                           low must be <= every draw of high
    a plain value                          fixed in every trial, as --set would
and may carry `when: {other.key: value or [values]}` (other.key a choice declared above it): the key
is drawn only in trials where that choice holds, and keeps the base config's value otherwise.

Checks, all before Ray starts, each a `SpaceError` naming the file and the key: an unknown entry;
a key the config does not have; an unknown distribution; low > high; an empty range (low == high,
an empty choice); a pair whose ends can cross; then every candidate value (each choice, both ends
of a range, each value of a short int range, each corner of a pair) applied to the base config
with `apply_overrides`, so a value the config forbids fails with the config's own message; then
the candidates of all keys together, so cross-field rules (model.embed_dim divisible by the heads,
model.mamba_layers <= model.depth) hold for every combination too.

Optuna parameter names: the config key; a pair's ends are `key[0]` and `key[1]` (the config's own
notation); a choice among lists is offered to Optuna as JSON strings ("[0.75, 1.5]": Optuna's
categorical values must be scalars); a grid is one categorical parameter `setting` whose values are
the names of its points. `SearchSpace.overrides(params)` turns a trial's parameters back into
dotted config overrides.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hqjepa.config import Config, ConfigError, apply_overrides, read_yaml

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice", "pair")
TOP_LEVEL = ("metric", "mode", "params", "grid")
GRID_KEYS = ("default", "one_at_a_time", "points")
MAX_INT_CANDIDATES = 64  # int ranges up to this many values are checked value by value
MAX_JOINT_CHECKS = 4096  # combinations of candidates checked together (ends only beyond this)
GRID_PARAM = "setting"


class SpaceError(ConfigError):
    """A search space that cannot be used; the message names the file and the key."""


# --- distributions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """One distribution: uniform | loguniform | int | choice | const (a fixed value)."""

    kind: str
    low: Any = None
    high: Any = None
    step: int = 1
    choices: tuple = ()
    value: Any = None
    encoded: bool = False  # choices offered to Optuna as JSON strings

    def candidates(self) -> list:
        """Values whose validity implies every draw's (ends; every value of a short int range)."""
        if self.kind == "const":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and (self.high - self.low) // self.step < MAX_INT_CANDIDATES:
            return list(range(self.low, self.high + 1, self.step))
        return [self.low, self.high]

    @property
    def span(self) -> tuple[float, float]:
        """Smallest and largest value a draw can take (numeric kinds)."""
        if self.kind == "const":
            return self.value, self.value
        return self.low, self.high

    def optuna_choices(self) -> list:
        """The choices as Optuna gets them (JSON strings when some choice is not a scalar)."""
        return [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw from an Optuna trial (define-by-run); returns the config value."""
        if self.kind == "uniform":
            return trial.suggest_float(name, self.low, self.high)
        if self.kind == "loguniform":
            return trial.suggest_float(name, self.low, self.high, log=True)
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step)
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(name, self.optuna_choices()))
        return self.value

    def decode(self, raw: Any) -> Any:
        """An Optuna categorical value -> the config value (inverse of `optuna_choices`)."""
        return json.loads(raw) if self.encoded else raw

    def text(self) -> str:
        """The distribution in one line, e.g. `loguniform [0.0001, 0.01]`, `choice a, b`, `= 3`."""
        if self.kind == "const":
            return f"= {self.value!r}"
        if self.kind == "choice":
            return "choice " + ", ".join(_fmt(c) for c in self.choices)
        step = f" step {self.step}" if self.kind == "int" and self.step != 1 else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{step}"


@dataclass(frozen=True)
class Param:
    """A config key and how it is drawn: one distribution, or two for the ends of a range pair."""

    key: str
    dist: Dist | None = None
    pair: tuple[Dist, Dist] | None = None
    when: tuple[tuple[str, tuple], ...] = ()

    def active(self, chosen: dict[str, Any]) -> bool:
        """Whether every `when` condition holds for the choices drawn so far (`chosen`: key -> value)."""
        return all(k in chosen and chosen[k] in allowed for k, allowed in self.when)

    def candidates(self) -> list:
        """Values to check against the config: the distribution's candidates, or every (low, high) pair
        of the two ends' candidates."""
        if self.pair is not None:
            return [[lo, hi] for lo in self.pair[0].candidates() for hi in self.pair[1].candidates()]
        return self.dist.candidates()

    def text(self) -> str:
        """The parameter in one line: `key: distribution [when other.key in [...]]`."""
        body = f"pair low {self.pair[0].text()}, high {self.pair[1].text()}" if self.pair else self.dist.text()
        cond = "".join(f" when {k} in {list(v)}" for k, v in self.when)
        return f"{self.key}: {body}{cond}"


@dataclass(frozen=True)
class GridPoint:
    """One configuration of a grid: its name, its overrides, the key it varies (None: the default
    or an explicit point)."""

    name: str
    overrides: dict
    factor: str | None = None


@dataclass
class SearchSpace:
    """A checked search space; calling it on an Optuna trial draws one configuration
    (Optuna's define-by-run form, which `ray.tune.search.optuna.OptunaSearch(space=...)` takes)."""

    source: str
    params: list[Param] = field(default_factory=list)
    grid: list[GridPoint] | None = None
    metric: str | None = None
    mode: str = "max"

    @property
    def is_grid(self) -> bool:
        """Whether the space is an explicit grid rather than sampled."""
        return self.grid is not None

    @property
    def keys(self) -> list[str]:
        """The config keys the space sets, in file order."""
        if self.grid is None:
            return [p.key for p in self.params]
        keys: list[str] = []
        for point in self.grid:
            keys += [k for k in point.overrides if k not in keys]
        return keys

    @property
    def log_keys(self) -> set[str]:
        """Keys drawn on a log scale (plotted with a log axis)."""
        return {p.key for p in self.params if p.dist is not None and p.dist.kind == "loguniform"}

    @property
    def plot_kinds(self) -> dict[str, Any]:
        """How report.plot_params draws each key: 'numeric', 'categories', or a range's drawn ends."""
        if self.grid is not None:
            return {k: "categories" for k in self.keys}
        kinds: dict[str, Any] = {}
        for p in self.params:
            if p.pair is not None:
                kinds[p.key] = tuple(i for i, d in enumerate(p.pair) if d.kind != "const") or "categories"
            else:
                kinds[p.key] = "numeric" if p.dist.kind in ("uniform", "loguniform", "int") else "categories"
        return kinds

    def __call__(self, trial: Any) -> None:
        """Draw one configuration on an Optuna trial (define-by-run): the grid point's name, or each
        active parameter in file order. Returns None (no constant parameters for Optuna)."""
        if self.grid is not None:
            trial.suggest_categorical(GRID_PARAM, [p.name for p in self.grid])
            return None
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not p.active(chosen):
                continue
            if p.pair is not None:
                for i, d in enumerate(p.pair):
                    d.suggest(trial, f"{p.key}[{i}]")
            else:
                chosen[p.key] = p.dist.suggest(trial, p.key)
        return None

    def overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's Optuna parameters -> dotted config overrides (pairs joined, choices decoded)."""
        if self.grid is not None:
            return dict(self.point(params[GRID_PARAM]).overrides)
        out: dict[str, Any] = {}
        for p in self.params:
            if not p.active(out):
                continue
            if p.pair is not None:
                out[p.key] = [d.value if d.kind == "const" else params[f"{p.key}[{i}]"] for i, d in enumerate(p.pair)]
            elif p.dist.kind == "const":
                out[p.key] = p.dist.value
            else:
                out[p.key] = p.dist.decode(params[p.key])
        return out

    def point(self, name: str) -> GridPoint:
        """The grid point called `name`; SpaceError when there is none."""
        for point in self.grid or []:
            if point.name == name:
                return point
        raise SpaceError(f"{self.source}: no grid point named {name!r}")

    def describe(self) -> list[str]:
        """One line per parameter (or grid point), as printed before a search starts."""
        if self.grid is not None:
            return [f"{p.name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in p.overrides.items()) for p in self.grid]
        return [p.text() for p in self.params]


# --- the Optuna samplers ---------------------------------------------------------------------------


class TuneGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, without its `study.stop()` once every point has started: under Ray
    Tune there is no `study.optimize` loop to stop (Optuna raises RuntimeError there); Tune runs
    exactly as many trials as the grid has points instead."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        """Do nothing after a trial (GridSampler's would stop the study once every point has started)."""
        return None


SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")


def make_sampler(name: str, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a space: `name` for sampled spaces, the grid sampler for grids."""
    if space.is_grid:
        return TuneGridSampler({GRID_PARAM: [p.name for p in space.grid]}, seed=seed)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    if name not in samplers:
        raise SpaceError(f"unknown sampler {name!r}; one of {', '.join(SAMPLERS)}")
    with warnings.catch_warnings():  # qmc and gp are marked experimental in Optuna; chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return samplers[name]()


# --- parsing and checking ----------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    """0.125 -> '0.125'; [0.15, 0.2] -> '0.15-0.2' (a range, as the paper's Table 3 writes it)."""
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _config_keys(section: str) -> list[str] | None:
    cls = typing.get_type_hints(Config).get(section)
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else None


class _Checker:
    """Parses one file's entries; every error names the file and the entry."""

    def __init__(self, source: str, base: Config) -> None:
        self.source = source
        self.base = base

    def fail(self, where: str, why: str) -> SpaceError:
        return SpaceError(f"{self.source}: {where}: {why}")

    def key(self, where: str, key: Any) -> str:
        if not isinstance(key, str):
            raise self.fail(where, f"parameter {key!r} must be a dotted config key (section.key)")
        section, _, name = key.partition(".")
        fields = _config_keys(section)
        if fields is None or not name:
            sections = ", ".join(typing.get_type_hints(Config))
            raise self.fail(
                where, f"unknown parameter {key!r}: not a config key (section.key, section one of {sections})"
            )
        if name not in fields:
            raise self.fail(where, f"unknown parameter {key!r}: not a config key; {section} has {', '.join(fields)}")
        return key

    def allowed(self, where: str, overrides: dict[str, Any], what: str) -> Config:
        try:
            return apply_overrides(self.base, overrides)
        except ConfigError as e:
            raise self.fail(where, f"{what} is not allowed by the config: {e}") from None

    def numeric_range(self, where: str, kind: str, spec: Any, step: Any = None) -> Dist:
        if not (isinstance(spec, (list, tuple)) and len(spec) == 2 and all(_is_number(v) for v in spec)):
            raise self.fail(where, f"{kind} takes [low, high] (two numbers), got {spec!r}")
        low, high = spec
        if low > high:
            raise self.fail(where, f"{kind} [{low}, {high}]: low > high")
        if low == high:
            raise self.fail(
                where, f"{kind} [{low}, {high}]: empty range (low == high); give the value plainly to fix it"
            )
        if kind == "loguniform" and low <= 0:
            raise self.fail(where, f"loguniform [{low}, {high}]: low must be > 0")
        if kind == "int":
            if not all(isinstance(v, int) for v in spec):
                raise self.fail(where, f"int [{low}, {high}]: ends must be integers")
            step = 1 if step is None else step
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise self.fail(where, f"int step {step!r}: must be an integer >= 1")
            if (high - low) % step:
                raise self.fail(where, f"int [{low}, {high}] step {step}: high - low is not a multiple of the step")
            return Dist("int", low, high, step=step)
        if step is not None:
            raise self.fail(where, f"step applies to int ranges only, not {kind}")
        return Dist(kind, float(low), float(high))

    def dist(self, where: str, spec: Any, allow_pair: bool = True) -> tuple[Dist | None, tuple | None, tuple]:
        """(dist, pair, when) of one entry."""
        if not isinstance(spec, dict):
            return Dist("const", value=spec), None, ()
        spec = dict(spec)
        when = self.when(where, spec.pop("when", None))
        step = spec.pop("step", None)
        kinds = [k for k in spec if k in DISTRIBUTIONS]
        unknown = [k for k in spec if k not in DISTRIBUTIONS]
        if unknown:
            raise self.fail(
                where,
                f"unknown distribution {unknown[0]!r}; one of {', '.join(DISTRIBUTIONS)} "
                "(plus step for int, when for conditions)",
            )
        if len(kinds) != 1:
            raise self.fail(where, f"give exactly one distribution ({', '.join(DISTRIBUTIONS)}), got {kinds or 'none'}")
        kind = kinds[0]
        if kind in ("uniform", "loguniform", "int"):
            return self.numeric_range(f"{where}.{kind}", kind, spec[kind], step), None, when
        if step is not None:
            raise self.fail(where, f"step applies to int ranges only, not {kind}")
        if kind == "choice":
            choices = spec["choice"]
            if not isinstance(choices, list):
                raise self.fail(f"{where}.choice", f"takes a list of values, got {choices!r}")
            if not choices:
                raise self.fail(f"{where}.choice", "empty range: an empty choice")
            if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
                raise self.fail(f"{where}.choice", f"repeats a value: {choices!r}")
            encoded = any(isinstance(c, (list, dict)) for c in choices)
            return Dist("choice", choices=tuple(choices), encoded=encoded), None, when
        if not allow_pair:
            raise self.fail(where, "a pair's ends are uniform, loguniform, int or a number")
        return None, self.pair(f"{where}.pair", spec["pair"]), when

    def pair(self, where: str, spec: Any) -> tuple[Dist, Dist]:
        if not isinstance(spec, dict) or set(spec) != {"low", "high"}:
            raise self.fail(where, f"takes {{low: ..., high: ...}}, got {spec!r}")
        ends = []
        for end in ("low", "high"):
            d, _, when = self.dist(f"{where}.{end}", spec[end], allow_pair=False)
            if when:
                raise self.fail(f"{where}.{end}", "when applies to the whole pair, not one end")
            if d.kind == "choice" or (d.kind == "const" and not _is_number(d.value)):
                raise self.fail(f"{where}.{end}", "a pair's ends are uniform, loguniform, int or a number")
            ends.append(d)
        low, high = ends
        if low.span[1] > high.span[0]:
            raise self.fail(
                where,
                f"low can reach {low.span[1]:g} but high can be as small as {high.span[0]:g}: "
                "every draw must give low <= high, so low's largest value must be <= high's "
                "smallest",
            )
        return low, high

    def when(self, where: str, spec: Any) -> tuple:
        if spec is None:
            return ()
        if not isinstance(spec, dict) or not spec:
            raise self.fail(f"{where}.when", f"takes {{other.key: value or [values]}}, got {spec!r}")
        return tuple((self.key(f"{where}.when", k), tuple(v) if isinstance(v, list) else (v,)) for k, v in spec.items())


def space_from_dict(raw: Any, base: Config, source: str = "<space>") -> SearchSpace:
    """Parse and check a search space (see the module docstring) against the base config."""
    check = _Checker(source, base)
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: a search space is a mapping with params or grid, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise SpaceError(f"{source}: unknown entry {unknown[0]!r}; a search space has {', '.join(TOP_LEVEL)}")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise SpaceError(f"{source}: mode {mode!r}: must be max or min")
    metric = raw.get("metric")
    if isinstance(metric, list) and metric and all(isinstance(m, str) for m in metric):
        metric = ",".join(metric)  # several metrics: their mean is optimised
    if metric is not None and not isinstance(metric, str):
        raise SpaceError(
            f"{source}: metric {metric!r}: must be a metric name such as geobench/m-eurosat/linear (or a list of them)"
        )
    if ("params" in raw) == ("grid" in raw):
        raise SpaceError(f"{source}: give either params (sampled) or grid (explicit points), exactly one")
    space = SearchSpace(source, metric=metric, mode=mode)
    if "grid" in raw:
        space.grid = _grid(check, raw["grid"])
        return space
    params = raw["params"]
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{source}: params must map config keys to distributions, got {params!r}")
    for key, spec in params.items():
        where = f"params.{key}"
        check.key("params", key)
        dist, pair, when = check.dist(where, spec)
        param = Param(key, dist, pair, when)
        for ref, allowed in when:
            earlier = {p.key: p for p in space.params}
            if ref not in earlier or earlier[ref].dist is None or earlier[ref].dist.kind != "choice":
                raise check.fail(f"{where}.when", f"{ref} must be a choice declared above {key}")
            missing = [v for v in allowed if v not in earlier[ref].dist.choices]
            if missing:
                raise check.fail(
                    f"{where}.when",
                    f"{ref} never takes {missing[0]!r} (its choices: {list(earlier[ref].dist.choices)})",
                )
        for value in param.candidates():
            check.allowed(where, {key: value}, f"value {value!r}")
        space.params.append(param)
    _check_jointly(check, space.params)
    return space


def _check_jointly(check: _Checker, params: list[Param]) -> None:
    """Every combination of the keys' candidates (ends only when there are too many) is a valid config."""
    candidates = [p.candidates() for p in params]
    if math.prod(len(c) for c in candidates) > MAX_JOINT_CHECKS:
        candidates = [c if len(c) <= 2 else [c[0], c[-1]] for c in candidates]
    if len(params) < 2 or math.prod(len(c) for c in candidates) > MAX_JOINT_CHECKS:
        return
    for combo in itertools.product(*candidates):
        overrides = {p.key: v for p, v in zip(params, combo, strict=True)}
        check.allowed(
            "params", overrides, "the combination " + ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
        )


def _grid(check: _Checker, raw: Any) -> list[GridPoint]:
    if not isinstance(raw, dict):
        raise check.fail("grid", f"takes default, one_at_a_time and/or points, got {raw!r}")
    unknown = [k for k in raw if k not in GRID_KEYS]
    if unknown:
        raise check.fail("grid", f"unknown entry {unknown[0]!r}; a grid has {', '.join(GRID_KEYS)}")

    def mapping(where: str, value: Any) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise check.fail(where, f"must map config keys to values, got {value!r}")
        for k in value:
            check.key(where, k)
        return dict(value)

    default = mapping("grid.default", raw.get("default"))
    points = [GridPoint("default", default)]
    for key, values in mapping("grid.one_at_a_time", raw.get("one_at_a_time")).items():
        if not isinstance(values, list):
            raise check.fail(f"grid.one_at_a_time.{key}", f"takes a list of values, got {values!r}")
        if not values:
            raise check.fail(f"grid.one_at_a_time.{key}", "empty range: no values")
        points += [GridPoint(f"{key}={_fmt(v)}", {**default, key: v}, key) for v in values]
    extra = raw.get("points") or {}
    if not isinstance(extra, dict):
        raise check.fail("grid.points", f"must map point names to {{config key: value}}, got {extra!r}")
    points += [
        GridPoint(str(name), {**default, **mapping(f"grid.points.{name}", over)}) for name, over in extra.items()
    ]
    if len(points) == 1 and not default:
        raise check.fail("grid", "empty range: no points")

    kept: list[GridPoint] = []
    seen: dict[str, str] = {}
    for point in points:
        cfg = check.allowed(f"grid point {point.name}", point.overrides, "this point")
        fingerprint = json.dumps(cfg.to_dict(), sort_keys=True)
        if fingerprint in seen:  # e.g. a factor's value that equals the default: the default runs once
            if point.factor is None and point.name != "default":
                raise check.fail(f"grid.points.{point.name}", f"is the same configuration as {seen[fingerprint]}")
            continue
        seen[fingerprint] = point.name
        kept.append(point)
    return kept


def load_space(path: str | Path, base: Config) -> SearchSpace:
    """Read and check a search-space YAML file against the base config."""
    return space_from_dict(read_yaml(path, "search space", SpaceError), base, source=Path(path).name)
