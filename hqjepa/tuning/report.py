"""What a search leaves in its directory: trials.csv, trials.md, params.png, history.png, best_config.yaml.

Input: one row per trial (built by ray_jobs/tune.py from Tune's experiment state):

    {"number": 0, "trial_id": "a1b2c3d4", "status": "complete" | "stopped early" | "error" | "unfinished",
     "rounds": 2, "metric": 61.5 (the objective at the last round reported, or None),
     "metrics": {"geobench/m-eurosat/linear": 61.5, "geobench/m-eurosat/linear/test": 58.0, ...},
     "values": {"mask.num_targets": 3, "mask.target_scale": [0.13, 0.24], ...},
     "setting": grid point name or None, "factor": the key a grid point varies or None, "error": text or None}

Best trial: the best objective among the trials that ran every round. A trial that ASHA stopped
after fewer rounds was measured on a shorter budget, so its score does not compete; only when no
trial finished every round is the best taken over all trials with a score.

Plots are drawn here (matplotlib) rather than with optuna.visualization: the rows carry what the
Optuna study does not (rounds reached, Tune's status), a one-factor-at-a-time grid is drawn one
factor per panel against the default (Table 3's reading), and a range key is drawn as its two ends.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from hqjepa.config import Config, apply_overrides

STATUSES = ("complete", "stopped early", "error", "unfinished")
MAX_CATEGORIES = 8  # a parameter with at most this many distinct values is drawn as categories


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_value(v: Any) -> str:
    """A parameter value for a table cell: 3, 0.1234, 0.15-0.2 (a range, as Table 3 writes it)."""
    if isinstance(v, (list, tuple)):
        return "-".join(fmt_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return "null" if v is None else str(v)


def fmt_metric(v: Any) -> str:
    """A score with two decimals, or "-" when there is none."""
    return f"{v:.2f}" if _is_number(v) else "-"


def best_row(rows: Sequence[dict], mode: str, rounds: int) -> dict | None:
    """The best trial (module docstring); None when no trial has a score."""
    scored = [r for r in rows if _is_number(r.get("metric"))]
    full = [r for r in scored if r.get("rounds", 0) >= rounds and r.get("status") == "complete"]
    pool = full or scored
    if not pool:
        return None
    pick = max if mode == "max" else min
    return pick(pool, key=lambda r: r["metric"])


def metric_columns(rows: Iterable[dict], objective: str) -> list[str]:
    """Names of every metric the trials reported besides the objective, sorted."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r.get("metrics", {}) if k not in names and k != objective]
    return sorted(names)


def write_tables(
    rows: Sequence[dict],
    keys: Sequence[str],
    objective: str,
    best: dict | None,
    csv_path: Path,
    md_path: Path,
    title: str = "",
) -> None:
    """Every trial: parameters, objective, other metrics, rounds, status (CSV and markdown)."""
    grid = any(r.get("setting") for r in rows)
    others = metric_columns(rows, objective)
    head = ["number", "trial_id"] + (["setting"] if grid else []) + ["status", "rounds", objective] + others
    head += list(keys) + ["error"]
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in rows:
            values = r.get("values", {})
            w.writerow(
                [r["number"], r["trial_id"]]
                + ([r.get("setting")] if grid else [])
                + [r["status"], r.get("rounds", 0), r.get("metric")]
                + [r.get("metrics", {}).get(m) for m in others]
                + [json.dumps(values[k]) if k in values else "" for k in keys]
                + [r.get("error") or ""]
            )

    md_head = ["#", "trial"] + (["setting"] if grid else []) + ["status", "rounds", f"{objective} (valid)"]
    md_head += others + list(keys)
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(md_head) + " |", "|" + "---|" * len(md_head)]
    for r in rows:
        values = r.get("values", {})
        trial = f"**{r['trial_id']}**" if best is not None and r is best else r["trial_id"]
        cells = [str(r["number"]), trial] + ([r.get("setting") or ""] if grid else [])
        cells += [r["status"], str(r.get("rounds", 0)), fmt_metric(r.get("metric"))]
        cells += [fmt_metric(r.get("metrics", {}).get(m)) for m in others]
        cells += [fmt_value(values[k]) if k in values else "(base)" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is not None:
        lines.append(
            f"Best (bold): trial {best['trial_id']}, {objective} = {fmt_metric(best['metric'])} on the "
            f"valid split after {best.get('rounds', 0)} round(s)."
        )
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        lines.append(f"- trial {r['trial_id']} failed: {r['error']}")
    md_path.write_text("\n".join(lines) + "\n")


def _panels(rows: Sequence[dict], keys: Sequence[str], kinds: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(label, key, how) per panel; how: 'numeric', 'categories', or the end index 0/1 of a range.
    `kinds` (from the space) says how a key is drawn: 'numeric', 'categories', or the drawn ends of a
    range; a key without one is drawn as categories when it has few distinct values."""
    panels = []
    for key in keys:
        values = [r["values"][key] for r in rows if key in r.get("values", {})]
        if not values:
            continue
        kind = kinds.get(key)
        if kind is None:
            few = len({json.dumps(v) for v in values}) <= MAX_CATEGORIES
            pairs = all(isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v) for v in values)
            kind = (
                "categories"
                if few
                else (0, 1)
                if pairs
                else "numeric"
                if all(map(_is_number, values))
                else "categories"
            )
        if isinstance(kind, (tuple, list)):
            panels += [(f"{key}[{i}] ({('low', 'high')[i]})", key, i) for i in kind]
        else:
            panels.append((key, key, kind))
    return panels


def _category_order(values: list) -> list:
    unique = []
    for v in values:
        if v not in unique:
            unique.append(v)
    try:
        return sorted(unique, key=lambda v: (v is None, v))
    except TypeError:
        return unique


def plot_params(
    rows: Sequence[dict],
    keys: Sequence[str],
    objective: str,
    best: dict | None,
    path: Path,
    log_keys: Iterable[str] = (),
    title: str = "",
    kinds: dict[str, Any] | None = None,
) -> Path:
    """The objective against each parameter, one panel each. A one-factor-at-a-time grid shows, in
    the panel of a key, only the points that vary that key and the default."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if _is_number(r.get("metric"))]
    panels = _panels(scored, keys, kinds or {}) or [("(no parameter)", None, "categories")]
    one_at_a_time = any(r.get("factor") for r in rows)
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.6 * n_rows), squeeze=False, constrained_layout=True)
    log_keys = set(log_keys)
    # the grid can hold more axes than panels: the spare ones are switched off below
    for ax, (label, key, how) in zip(axes.flat, panels, strict=False):
        shown = [
            r for r in scored if key in r.get("values", {}) and (not one_at_a_time or r.get("factor") in (None, key))
        ]
        ax.set_title(label, fontsize=10)
        ax.set_ylabel(objective, fontsize=8)
        if not shown:
            ax.text(0.5, 0.5, "no scored trial", ha="center", va="center", transform=ax.transAxes)
            continue
        if how == "categories":
            order = _category_order([r["values"][key] for r in shown])
            labels = [fmt_value(v) for v in order]
            xs = [order.index(r["values"][key]) for r in shown]
            ax.set_xticks(range(len(order)), labels, rotation=30 if len(order) > 4 else 0, fontsize=8)
        else:
            xs = [r["values"][key] if how == "numeric" else r["values"][key][how] for r in shown]
            if key in log_keys:
                ax.set_xscale("log")
        for x, r in zip(xs, shown, strict=True):
            full = r["status"] == "complete"
            ax.plot(x, r["metric"], "o", ms=7, mfc="C0" if full else "none", mec="C0")
            if best is not None and r is best:
                ax.plot(x, r["metric"], "*", ms=16, color="C3")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        (title + ": " if title else "") + "filled: every round, hollow: stopped early, star: best", fontsize=10
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(
    rows: Sequence[dict], objective: str, mode: str, rounds: int, best: dict | None, path: Path, title: str = ""
) -> Path:
    """The objective of each trial in start order, and the best so far among full-budget trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    scored = [r for r in rows if _is_number(r.get("metric"))]
    for r in scored:
        full = r["status"] == "complete" and r.get("rounds", 0) >= rounds
        ax.plot(r["number"], r["metric"], "o", ms=7, mfc="C0" if full else "none", mec="C0")
    running, line = None, []
    for r in sorted(scored, key=lambda r: r["number"]):
        if r["status"] == "complete" and r.get("rounds", 0) >= rounds:
            better = running is None or (r["metric"] > running if mode == "max" else r["metric"] < running)
            running = r["metric"] if better else running
        if running is not None:
            line.append((r["number"], running))
    if line:
        ax.step(*zip(*line, strict=True), where="post", color="C1", label="best so far (every round run)")
        ax.legend(fontsize=8)
    if best is not None:
        ax.plot(best["number"], best["metric"], "*", ms=16, color="C3")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(objective)
    ax.set_title((title + ": " if title else "") + "optimisation history (hollow: stopped early)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_best_config(base: Config, best: dict, path: Path, header: Sequence[str] = ()) -> Config:
    """The base config with the best trial's values: a configs/-style YAML that `load_config` reads."""
    cfg = apply_overrides(base, best.get("values", {}))
    text = "".join(f"# {line}\n" for line in header)
    path.write_text(text + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return cfg


def write_report(
    out_dir: str | Path,
    rows: Sequence[dict],
    *,
    keys: Sequence[str],
    objective: str,
    mode: str,
    rounds: int,
    base: Config,
    title: str = "",
    log_keys: Iterable[str] = (),
    kinds: dict[str, Any] | None = None,
    best_header: Sequence[str] = (),
) -> dict[str, Any]:
    """Write every output of a search; returns their paths and the best trial's id and score."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["number"])
    best = best_row(rows, mode, rounds)
    paths: dict[str, Any] = {
        "table_csv": str(out / "trials.csv"),
        "table_md": str(out / "trials.md"),
        "params_png": str(out / "params.png"),
        "history_png": str(out / "history.png"),
    }
    write_tables(rows, keys, objective, best, out / "trials.csv", out / "trials.md", title)
    plot_params(rows, keys, objective, best, out / "params.png", log_keys, title, kinds)
    plot_history(rows, objective, mode, rounds, best, out / "history.png", title)
    if best is not None:
        header = list(best_header) + [
            f"best trial {best['trial_id']}: {objective} = {fmt_metric(best['metric'])} "
            f"(valid split, {best.get('rounds', 0)} round(s))"
        ]
        header += [f"  {k}: {fmt_value(v)}" for k, v in best.get("values", {}).items()]
        write_best_config(base, best, out / "best_config.yaml", header)
        paths.update(best_config=str(out / "best_config.yaml"), best_trial=best["trial_id"], best_metric=best["metric"])
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    paths["trials"] = {"total": len(rows), **{s: n for s, n in counts.items() if n}}
    return paths
