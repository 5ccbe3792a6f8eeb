"""Each objective term's effect in a Table 2 ablation, paired: with the term against without it.

    python -m experiments.term_effects runs/reproduce/table2/results.json [--protocol linear] [--out FILE]

Reads the results.json that `ray_jobs/reproduce.py table2` writes. A row's terms are read from its
planned overrides (a weight > 0 switches a term on; `loss.fqs_mode` names the FQS variant). For a
term T, a unit is a (row R without T, seed s) whose partner R + T ran with the same seed (the
same `optim.seed`: the same synthetic archive, initial weights and probe seeds), so the eight rows
give four units per seed:

    d(R, s) = mean over tasks of [ test(R + T, s, task) - test(R, s, task) ]

and the term's effect is mean d over units, with the exact two-sided sign-flip p of
`experiments.pairs.sign_flip_p` (under "T changes nothing" every d is as likely to be -d). Units
that share a seed share its data and initial weights, so they are not independent draws of the
seed; the test treats each unit's sign as exchangeable, which is what "no effect" implies for
each pair of runs. The per-task lines give the same statistic on one task's differences.
The ninth row (the full objective with FQS in a non-paper mode) is compared with the full paper
row, one unit per seed: "fqs_mode" below.

Prints one JSON line per (term, scope) with n, mean, std, wins/losses/ties, p and the differences,
each with this run's provenance; --out also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from experiments.pairs import sign_flip_p
from hqjepa.provenance import provenance

TERMS = {"cm": "loss.w_cm", "sig": "loss.w_sig", "fqs": "loss.w_fqs"}


def row_terms(overrides: dict) -> tuple[frozenset[str], str]:
    """The terms a row switches on (besides L_pred) and its FQS mode."""
    on = frozenset(term for term, key in TERMS.items() if float(overrides.get(key, 0.0)) > 0)
    return on, str(overrides.get("loss.fqs_mode", "paper"))


def scores(results: dict, protocol: str) -> dict[tuple[frozenset[str], str, int], dict[str, float]]:
    """(terms, fqs mode, seed) -> task -> test score, from the finished jobs of `protocol`."""
    rows = {(r["row"], r["seed"]): row_terms(r["overrides"]) for r in results["runs"]}
    out: dict = {}
    for rec in results["records"]:
        if rec.get("status") != "ok" or rec.get("protocol") != protocol:
            continue
        terms, mode = rows[(rec["row"], rec["seed"])]
        out.setdefault((terms, mode, rec["seed"]), {})[rec["task"]] = float(rec["test"])
    return out


def summary(name: str, scope: str, units: list[tuple[str, float]]) -> dict:
    """Mean, spread, signs and the exact sign-flip p of the unit differences."""
    d = [v for _, v in units]
    n = len(d)
    mean = sum(d) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
    return {
        "term": name,
        "scope": scope,
        "n": n,
        "mean_delta": round(mean, 3),
        "std": round(std, 3),
        "wins": sum(x > 0 for x in d),
        "losses": sum(x < 0 for x in d),
        "ties": sum(x == 0 for x in d),
        "p_sign_flip": float(f"{sign_flip_p(d):.3g}"),
        "units": [{"unit": u, "delta": round(v, 3)} for u, v in units],
    }


def _delta(with_t: dict[str, float], without: dict[str, float], task: str | None) -> float | None:
    tasks = [task] if task else sorted(set(with_t) & set(without))
    if not tasks or any(t not in with_t or t not in without for t in tasks):
        return None
    return sum(with_t[t] - without[t] for t in tasks) / len(tasks)


def effects(results: dict, protocol: str = "linear") -> list[dict]:
    """One summary per (term, scope): scope "all tasks" (the mean over tasks per unit) and each task."""
    got = scores(results, protocol)
    tasks = sorted({t for by_task in got.values() for t in by_task})
    seeds = sorted({s for _, _, s in got})
    lines = []
    comparisons = []
    for term in TERMS:
        pairs = []
        for terms, mode, seed in got:
            if mode == "paper" and term not in terms and (terms | {term}, "paper", seed) in got:
                label = "L_pred" + "".join(f"+{t}" for t in sorted(terms))
                pairs.append((f"{label} seed {seed}", got[(terms | {term}, "paper", seed)], got[(terms, mode, seed)]))
        comparisons.append((term, sorted(pairs, key=lambda p: p[0])))
    full = frozenset(TERMS)
    modes = sorted({m for _, m, _ in got if m != "paper"})
    for mode in modes:
        pairs = [
            (f"full seed {s}", got[(full, mode, s)], got[(full, "paper", s)])
            for s in seeds
            if (full, mode, s) in got and (full, "paper", s) in got
        ]
        comparisons.append((f"fqs_mode {mode} vs paper", pairs))
    for name, pairs in comparisons:
        for scope in [None, *tasks]:
            units = [(u, d) for u, w, wo in pairs if (d := _delta(w, wo, scope)) is not None]
            if units:
                lines.append(summary(name, scope or "all tasks", units))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.term_effects", description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="results.json of `ray_jobs/reproduce.py table2`")
    p.add_argument("--protocol", default="linear", choices=["linear", "finetune"])
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    if results.get("table") != "table2":
        print(f"term_effects: error: {args.results} is a {results.get('table')!r} result, not table2", file=sys.stderr)
        return 2
    prov = provenance(None if argv is None else ["-m", __spec__.name, *argv])
    lines = [json.dumps({**line, "protocol": args.protocol, **prov}) for line in effects(results, args.protocol)]
    if not lines:
        print(f"term_effects: error: no paired {args.protocol} scores in {args.results}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
