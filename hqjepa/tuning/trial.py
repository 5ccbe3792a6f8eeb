"""One trial of a search, without Ray: its config and training budget, and its GeoBench metric.

Metric `geobench/<task>/<protocol>` (e.g. geobench/m-eurosat/linear): the score of the trial's
exported encoder on the task's VALID split (percent, GeoBench's metric for the task: accuracy, F1
or Jaccard), averaged over the eval config's seeds. Hyperparameters are chosen on valid; the test
score is reported beside it as `geobench/<task>/<protocol>/test` and never optimised. Several
metrics are optimised through their mean, reported as `geobench/mean`:

    objective = (1 / K) sum_k valid_k

Budget: a trial trains `budget_epochs` epochs. optim.epochs is set to it, so the learning-rate,
weight-decay and EMA schedules run their whole course in the short run, and optim.warmup_epochs
keeps its share of the schedule (30 of 400 epochs -> 1.5 of 20). The run's S steps are cut into R
rounds; round r ends at step

    s_r = ceil(S * r / R),

and after each round the encoder is probed and the result reported, so a scheduler (ASHA) can stop
a poor trial between rounds.

Probes: the metrics' (task, protocol) pairs, plus each of their tasks under every protocol asked
for (`probe_pairs`; tune.py's --protocol linear,finetune reports both scores of every task), are
run as Ray tasks by ray_jobs/tune.py; `scores_from_records` turns the finished jobs' records into
the trial's report. `evaluate_export` does the same in one process, without Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hqjepa.config import Config, ConfigError, apply_overrides
from hqjepa.eval.config import eval_config_from_dict
from hqjepa.eval.geobench import TASKS
from hqjepa.eval.runner import PROTOCOLS, EvalJob, run_extract, run_finetune, run_linear

MEAN_METRIC = "geobench/mean"


def metric_name(task: str, protocol: str) -> str:
    """The metric a trial reports for one task and protocol: `geobench/<task>/<protocol>`."""
    return f"geobench/{task}/{protocol}"


def parse_metrics(text: str) -> list[tuple[str, str]]:
    """'geobench/m-eurosat/linear[,geobench/m-so2sat/linear...]' -> [(task, protocol), ...]."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError("metric: empty; expected geobench/<task>/<protocol>, e.g. geobench/m-eurosat/linear")
    out: list[tuple[str, str]] = []
    for name in names:
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "geobench":
            raise ConfigError(f"metric {name!r}: expected geobench/<task>/<protocol>, e.g. geobench/m-eurosat/linear")
        task, protocol = parts[1], parts[2]
        if task not in TASKS:
            raise ConfigError(f"metric {name!r}: unknown task {task!r}; known: {', '.join(TASKS)}")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"metric {name!r}: unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
        if (task, protocol) in out:
            raise ConfigError(f"metric {name!r} is named twice")
        out.append((task, protocol))
    return out


def objective_name(metrics: Sequence[tuple[str, str]]) -> str:
    """The name the search optimises: the one metric, or geobench/mean of several."""
    return metric_name(*metrics[0]) if len(metrics) == 1 else MEAN_METRIC


def budget_config(base: Config, overrides: dict[str, Any], budget_epochs: int) -> Config:
    """The trial's config: the base with a budget of `budget_epochs` epochs (module docstring), then
    the trial's own overrides; train.max_steps is left to the rounds."""
    warmup = base.optim.warmup_epochs * budget_epochs / base.optim.epochs
    return apply_overrides(
        base, {"optim.epochs": budget_epochs, "optim.warmup_epochs": warmup, "train.max_steps": None, **overrides}
    )


def round_ends(total_steps: int, rounds: int) -> list[int]:
    """Step counts at which rounds 1..R end: ceil(S * r / R)."""
    if rounds < 1:
        raise ConfigError(f"rounds = {rounds}: must be >= 1")
    if total_steps < rounds:
        raise ConfigError(
            f"a budget of {total_steps} steps cannot be cut into {rounds} rounds; "
            "raise --budget-epochs or lower --rounds"
        )
    return [math.ceil(total_steps * r / rounds) for r in range(1, rounds + 1)]


def probe_pairs(metrics: Sequence[tuple[str, str]], protocols: Sequence[str] = ()) -> list[tuple[str, str]]:
    """What a trial probes: the metrics' (task, protocol) pairs, then each of their tasks under every
    protocol of `protocols` that is not probed already (reported, never optimised)."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ConfigError(f"protocol {bad[0]!r}: choose from {', '.join(PROTOCOLS)}")
    pairs = list(metrics)
    for task in dict.fromkeys(task for task, _ in metrics):
        pairs += [(task, p) for p in PROTOCOLS if p in protocols and (task, p) not in pairs]
    return pairs


def scores_from_records(
    records: Sequence[dict], metrics: Sequence[tuple[str, str]], pairs: Sequence[tuple[str, str]] | None = None
) -> dict[str, float]:
    """Finished evaluation jobs -> {metric: mean valid, metric/test: mean test, ...} for every probed
    pair, and geobench/mean over `metrics` when there are several. A failed job raises RuntimeError with
    the runner's message (task / protocol / encoder / seed: cause)."""
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        raise RuntimeError(f"evaluation failed: {failed[0]['error']}")
    out: dict[str, float] = {}
    for task, protocol in pairs or metrics:
        mine = [r for r in records if (r["task"], r["protocol"]) == (task, protocol)]
        if not mine:
            raise RuntimeError(f"evaluation failed: no finished job for {task} / {protocol}")
        name = metric_name(task, protocol)
        out[name] = sum(float(r["valid"]) for r in mine) / len(mine)
        out[f"{name}/test"] = sum(float(r["test"]) for r in mine) / len(mine)
    if len(metrics) > 1:
        out[MEAN_METRIC] = sum(out[metric_name(*m)] for m in metrics) / len(metrics)
    return out


def evaluate_export(
    export: str | Path,
    metrics: Sequence[tuple[str, str]],
    benchmark_dir: str | Path,
    eval_config: dict,
    device: str | None = None,
    protocols: Sequence[str] = (),
) -> dict[str, float]:
    """Probe an exported encoder in this process: {metric: mean valid, metric/test: mean test, ...}
    for `probe_pairs(metrics, protocols)`. Linear probing extracts the frozen features once and trains
    one head per seed. A failed evaluation raises RuntimeError (see `scores_from_records`)."""
    seeds = eval_config_from_dict(eval_config).run.seeds
    pairs = probe_pairs(metrics, protocols)
    records: list[dict] = []
    for task, protocol in pairs:
        jobs = [
            EvalJob(task, protocol, seed, "checkpoint", str(export), str(benchmark_dir), eval_config, device=device)
            for seed in seeds
        ]
        if protocol == "linear":
            features = run_extract(jobs[0])
            records += [run_linear(job, features) for job in jobs]
        else:
            records += [run_finetune(job) for job in jobs]
        if any(r.get("status") != "ok" for r in records):
            break
    return scores_from_records(records, metrics, pairs)
