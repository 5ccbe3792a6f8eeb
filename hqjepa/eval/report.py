"""Results of a GeoBench run: results.json, a table shaped like the paper's Table 1, a bar chart.

Table: one column per task (the paper's order and headers: "m-bigearthnet F1", "m-eurosat Acc.",
..., "m-SA-crop Jaccard", "m-cashew Jaccard"), one row per (encoder, protocol); a cell is the test
score in percent, mean +- sample standard deviation (ddof = 1) over the seeds that finished,
with "(k/n seeds)" when some failed. A cell whose every seed failed reads "error [i]", and note [i]
under the table gives the message, which names the task, protocol, encoder and seed and the cause.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hqjepa.eval.geobench import TASKS

PROTOCOL_NAMES = {"linear": "Linear probing", "finetune": "Fine-tuning"}
METRIC_HEADERS = {"F1": "F1", "Accuracy": "Acc.", "Jaccard": "Jaccard"}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """encoder -> protocol -> task -> {mean, std, n, n_runs, scores, valid_mean, errors}."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for r in records:
        cell = (
            out.setdefault(r["encoder"], {})
            .setdefault(r["protocol"], {})
            .setdefault(r["task"], {"scores": [], "valid": [], "errors": [], "n_runs": 0})
        )
        cell["n_runs"] += 1
        if r.get("status") == "ok":
            cell["scores"].append(float(r["test"]))
            cell["valid"].append(float(r["valid"]))
        else:
            cell["errors"].append(r.get("error") or "unknown error")
    for by_protocol in out.values():
        for by_task in by_protocol.values():
            for cell in by_task.values():
                cell["n"] = len(cell["scores"])
                if cell["scores"]:
                    cell["mean"], cell["std"] = _mean_std(cell["scores"])
                    cell["valid_mean"] = _mean_std(cell["valid"])[0]
                else:
                    cell["mean"] = cell["std"] = cell["valid_mean"] = None
    return out


def _ordered(keys: Iterable[str], order: Sequence[str]) -> list[str]:
    keys = list(dict.fromkeys(keys))
    return [k for k in order if k in keys] + [k for k in keys if k not in order]


def markdown_table(records: Sequence[dict[str, Any]], encoder_names: dict[str, str] | None = None) -> str:
    """The Table-1-shaped markdown table with error notes (module docstring)."""
    summary = summarize(records)
    tasks = _ordered((r["task"] for r in records), list(TASKS))
    encoders = _ordered(summary, ["checkpoint", "random-init"])
    names = encoder_names or {}
    header = ["Method", "Setting"] + [f"{TASKS[t].short} {METRIC_HEADERS[TASKS[t].metric]} (%)" for t in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: list[str] = []
    for enc in encoders:
        for protocol in _ordered(summary[enc], list(PROTOCOL_NAMES)):
            row = [names.get(enc, enc), PROTOCOL_NAMES.get(protocol, protocol)]
            for t in tasks:
                cell = summary[enc][protocol].get(t)
                if cell is None:
                    row.append("-")
                    continue
                refs = []
                for msg in dict.fromkeys(cell["errors"]):
                    if msg not in notes:
                        notes.append(msg)
                    refs.append(notes.index(msg) + 1)
                ref = f" [{', '.join(str(i) for i in refs)}]" if refs else ""
                if cell["n"] == 0:
                    row.append(f"error{ref}")
                else:
                    text = f"{cell['mean']:.2f} ± {cell['std']:.2f}"
                    if cell["n"] < cell["n_runs"]:
                        text += f" ({cell['n']}/{cell['n_runs']} seeds){ref}"
                    row.append(text)
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Test-split scores in percent, mean ± standard deviation (ddof=1) over seeds; "
        "model selection on the valid split only."
    )
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {msg}" for i, msg in enumerate(notes, 1))
    return "\n".join(lines) + "\n"


def bar_chart(records: Sequence[dict[str, Any]], path: str | Path, encoder_names: dict[str, str] | None = None) -> Path:
    """Grouped bars: one group per task, one bar per (encoder, protocol), error bars = std; a failed
    cell is an empty slot marked 'x'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records)
    tasks = _ordered((r["task"] for r in records), list(TASKS))
    series = [
        (e, p)
        for e in _ordered(summary, ["checkpoint", "random-init"])
        for p in _ordered(summary[e], list(PROTOCOL_NAMES))
    ]
    names = encoder_names or {}
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 4))
    for k, (enc, protocol) in enumerate(series):
        xs, heights, errs, failed = [], [], [], []
        for i, t in enumerate(tasks):
            cell = summary[enc][protocol].get(t)
            x = i - 0.4 + width * (k + 0.5)
            if cell and cell["n"]:
                xs.append(x)
                heights.append(cell["mean"])
                errs.append(cell["std"])
            elif cell:
                failed.append(x)
        bars = ax.bar(
            xs,
            heights,
            width,
            yerr=errs,
            capsize=2,
            label=f"{names.get(enc, enc)}, {PROTOCOL_NAMES.get(protocol, protocol)}",
        )
        if failed:
            ax.plot(failed, [1.0] * len(failed), "x", color=bars.patches[0].get_facecolor() if bars.patches else "k")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{TASKS[t].short}\n{TASKS[t].metric}" if t in TASKS else t for t in tasks])
    ax.set_ylabel("test score (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("GeoBench (x: failed, see table notes)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    out_dir: str | Path,
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    encoder_names: dict[str, str] | None = None,
) -> dict[str, str]:
    """results.json (meta, every run, the summary), table.md, results.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(
        records,
        key=lambda r: (
            list(TASKS).index(r["task"]) if r["task"] in TASKS else 99,
            r["encoder"],
            r["protocol"],
            r["seed"],
        ),
    )
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "units": "percent", "runs": records, "summary": summarize(records)}, indent=1) + "\n"
    )
    (out / "table.md").write_text(markdown_table(records, encoder_names))
    bar_chart(records, out / "results.png", encoder_names)
    return {"results": str(out / "results.json"), "table": str(out / "table.md"), "chart": str(out / "results.png")}
