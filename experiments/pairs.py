"""Pool the paired differences of several `experiments.learning` runs and test them.

    python -m experiments.pairs RUN/eval/results.json [RUN2/eval/results.json ...] [--out pairs.jsonl]

A pair is one seed s probed twice on one task: pretraining run s (which starts from random encoder
s's weights, `optim.seed=s`) and random encoder s, both with head seed s; d_s = test(pretrained s)
- test(random s). Runs are pooled seed by seed (a later run adds seeds with `--first-seed`), so a
seed that appears in two files is refused instead of counted twice.

Per task it prints {"task", "n", "mean_delta", "std", "t", "p_sign_flip", "wins", "losses", "ties",
"deltas"}:
- t = mean(d) / (std(d) / sqrt(n)), std with ddof=1 (the paired t statistic);
- p_sign_flip: the exact two-sided sign-flip (paired permutation) test. Under "pretraining changes
  nothing", each d_s is as likely to be -d_s, so over all 2^n sign assignments
  p = #{signs : |sum_s sign_s d_s| >= |sum_s d_s|} / 2^n. Exact and free of a normality
  assumption, which a handful of accuracy differences near a ceiling of 100 % do not earn.
  Counted exactly, not sampled, up to n = 40: the subset sums of each half of the pairs (2^(n/2)
  each), one half sorted, and for each sum of the other half a binary search counts its extreme
  partners (meet in the middle: 2^20 x 20 steps at n = 40 instead of 2^40 sums).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from hqjepa.provenance import provenance

MAX_EXACT_PAIRS = 40
# Scores are float32 percentages (97.00000286 for 97.0), so a sign assignment whose sum ties the
# observed one exactly in counts (accuracy moves in 0.1-point steps at 1000 test samples) can
# miss it by ~1e-5; sums within this many points of the observed one count as ties, i.e. extreme.
TIE_POINTS = 1e-4


PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


def paired_scores(records: list[dict]) -> dict[str, dict[int, tuple[float, float]]]:
    """task -> seed -> (pretrained test, random-init test); seeds where either probe failed are left out."""
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("protocol", "linear") == "linear":
            scores.setdefault((r["task"], r["encoder"]), {})[r["seed"]] = r["test"]
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for (task, encoder), by_seed in scores.items():
        if encoder != "checkpoint":
            continue
        random = scores.get((task, "random-init"), {})
        out[task] = {s: (by_seed[s], random[s]) for s in sorted(by_seed) if s in random}
    return out


def pool(runs: list[tuple[str, list[dict]]]) -> dict[str, dict[int, tuple[float, float]]]:
    """Merge runs' pairs task by task; the same (task, seed) in two runs is an error naming both."""
    pooled: dict[str, dict[int, tuple[float, float]]] = {}
    origin: dict[tuple[str, int], str] = {}
    for name, records in runs:
        for task, pairs in paired_scores(records).items():
            for seed, pair in pairs.items():
                if (task, seed) in origin:
                    raise ValueError(
                        f"{task} seed {seed} is in both {origin[task, seed]} and {name}: "
                        "pooling it twice would count one pair as two"
                    )
                origin[task, seed] = name
                pooled.setdefault(task, {})[seed] = pair
    return pooled


def _subset_sums(values: list[float]) -> np.ndarray:
    """All 2^len(values) sums of subsets of `values`, built by doubling."""
    sums = np.zeros(1)
    for v in values:
        sums = np.concatenate([sums, sums + v])
    return sums


def sign_flip_p(deltas: list[float]) -> float:
    """Exact two-sided sign-flip p-value of mean(deltas) = 0 (see the module docstring).

    Flipping the signs of a subset S turns the sum T into T - 2 sum_S d, which is at least as
    extreme as T when |T - 2 sum_S d| >= |T|, i.e. sum_S d <= (T - |T|) / 2 or >= (T + |T|) / 2
    (ties count as extreme, within TIE_POINTS). With S = A u B, A from the first half of the pairs
    and B from the second, each a is matched against the sorted b's by binary search.
    """
    n = len(deltas)
    if n == 0:
        raise ValueError("no pairs to test")
    if n > MAX_EXACT_PAIRS:
        raise ValueError(f"{n} pairs: the exact test counts 2^n sign assignments; at most {MAX_EXACT_PAIRS}")
    total = float(sum(deltas))
    observed = abs(total) - TIE_POINTS
    if observed <= 0:
        return 1.0  # a zero sum: every assignment is as extreme
    first = _subset_sums(list(deltas[: n // 2]))
    second = np.sort(_subset_sums(list(deltas[n // 2 :])))
    low, high = (total - observed) / 2, (total + observed) / 2  # disjoint: observed > 0
    below = np.searchsorted(second, low - first, side="right")
    above = len(second) - np.searchsorted(second, high - first, side="left")
    return int(below.sum() + above.sum()) / 2**n


def task_stats(task: str, pairs: dict[int, tuple[float, float]]) -> dict:
    seeds = sorted(pairs)
    deltas = [pairs[s][0] - pairs[s][1] for s in seeds]
    n = len(deltas)
    mean = sum(deltas) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1)) if n > 1 else float("nan")
    t = mean / (std / math.sqrt(n)) if n > 1 and std > 0 else float("nan")
    return {
        "task": task,
        "n": n,
        "seeds": seeds,
        "mean_delta": round(mean, 3),
        "std": round(std, 3),
        "t": round(t, 2),
        "p_sign_flip": float(f"{sign_flip_p(deltas):.3g}"),  # 3 significant digits: p can be 1e-5
        "wins": sum(d > 0 for d in deltas),
        "losses": sum(d < 0 for d in deltas),
        "ties": sum(d == 0 for d in deltas),
        "pretrained_mean": round(sum(pairs[s][0] for s in seeds) / n, 3),
        "random_mean": round(sum(pairs[s][1] for s in seeds) / n, 3),
        "random_max": round(max(pairs[s][1] for s in seeds), 3),
        "deltas": [round(d, 2) for d in deltas],
    }


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results.json files written by experiments.learning (OUT/eval/)")
    p.add_argument("--out", default=None, help="also write the JSON lines here")
    args = p.parse_args(argv)
    runs = []
    for path in args.results:
        data = json.loads(Path(path).read_text())
        if "runs" not in data:
            raise SystemExit(f"{path}: not a results.json of experiments.learning (no 'runs')")
        runs.append((path, data["runs"]))
    try:
        pooled = pool(runs)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    lines = [record(task_stats(task, pairs)) for task, pairs in pooled.items() if pairs]
    print("\n".join(lines), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
