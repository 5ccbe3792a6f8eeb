"""The outputs of a search: trial table (CSV, markdown), plots, and the best config as a YAML
that load_config reads; the best trial is chosen among trials that ran every round."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hqjepa.config import load_config
from hqjepa.tuning.report import best_row, write_report
from hqjepa.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
OBJ = "geobench/m-eurosat/linear"


def _row(number, status, rounds, metric, values, **extra):
    metrics = {} if metric is None else {OBJ: metric, f"{OBJ}/test": metric - 1}
    return {
        "number": number,
        "trial_id": f"t{number}",
        "status": status,
        "rounds": rounds,
        "metric": metric,
        "metrics": metrics,
        "values": values,
        "setting": None,
        "factor": None,
        "error": None,
        **extra,
    }


def test_report_of_a_sampled_search(tmp_path):
    base = load_config(ROOT / "configs/tiny.yaml")
    space = load_space(ROOT / "tune_spaces/masking.yaml", base)
    rows = [
        _row(
            0,
            "complete",
            2,
            40.0,
            {
                "mask.num_targets": 2,
                "mask.target_scale": [0.12, 0.25],
                "mask.context_scale": [0.6, 1.0],
                "mask.target_aspect": [0.5, 2.0],
            },
        ),
        # the highest score, but after one round only (ASHA stopped it): not comparable, not the best
        _row(
            1,
            "stopped early",
            1,
            90.0,
            {
                "mask.num_targets": 5,
                "mask.target_scale": [0.18, 0.22],
                "mask.context_scale": [0.9, 1.0],
                "mask.target_aspect": [1.0, 1.0],
            },
        ),
        _row(
            2,
            "complete",
            2,
            55.5,
            {
                "mask.num_targets": 3,
                "mask.target_scale": [0.11, 0.29],
                "mask.context_scale": [0.45, 1.0],
                "mask.target_aspect": [0.33, 3.0],
            },
        ),
        _row(
            3,
            "error",
            0,
            None,
            {
                "mask.num_targets": 1,
                "mask.target_scale": [0.2, 0.2],
                "mask.context_scale": [0.5, 1.0],
                "mask.target_aspect": [0.75, 1.5],
            },
            error="RuntimeError: evaluation failed: m-eurosat / linear / checkpoint / seed 0: boom",
        ),
    ]
    out = write_report(
        tmp_path,
        rows,
        keys=space.keys,
        objective=OBJ,
        mode="max",
        rounds=2,
        base=base,
        title="masking",
        log_keys=space.log_keys,
        kinds=space.plot_kinds,
        best_header=["a test"],
    )
    assert out["best_trial"] == "t2" and out["best_metric"] == 55.5
    assert out["trials"] == {"total": 4, "complete": 2, "stopped early": 1, "error": 1}

    with open(out["table_csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table] == ["t0", "t1", "t2", "t3"]
    assert [r["status"] for r in table] == ["complete", "stopped early", "complete", "error"]
    assert json.loads(table[2]["mask.target_scale"]) == [0.11, 0.29] and table[2]["rounds"] == "2"
    assert float(table[2][OBJ]) == 55.5 and float(table[2][f"{OBJ}/test"]) == 54.5
    assert "boom" in table[3]["error"]

    md = Path(out["table_md"]).read_text().splitlines()
    assert md[2].startswith("| # | trial | status | rounds | geobench/m-eurosat/linear (valid) |")
    assert "| 2 | **t2** | complete | 2 | 55.50 | 54.50 | 3 | 0.11-0.29 | 0.45-1 | 0.33-3 |" in md
    assert any(line.startswith("- trial t3 failed:") and "boom" in line for line in md)
    for key in ("params_png", "history_png"):
        assert Path(out[key]).read_bytes()[:8] == PNG

    best = load_config(out["best_config"])  # a ready configs/-style YAML
    assert best.mask.num_targets == 3 and list(best.mask.target_scale) == [0.11, 0.29]
    assert list(best.mask.target_aspect) == [0.33, 3.0]
    assert best.model == base.model and best.optim == base.optim  # everything else is the base config's
    assert Path(out["best_config"]).read_text().startswith("# a test\n")


def test_report_of_a_grid_and_the_best_rule(tmp_path):
    base = load_config(ROOT / "configs/tiny.yaml")
    space = load_space(ROOT / "tune_spaces/paper_table3.yaml", base)
    rows = [
        _row(i, "complete", 1, 50.0 + (i % 5), dict(p.overrides), setting=p.name, factor=p.factor)
        for i, p in enumerate(space.grid)
    ]
    rows[5]["status"], rows[5]["metric"] = "unfinished", None
    out = write_report(
        tmp_path, rows, keys=space.keys, objective=OBJ, mode="max", rounds=1, base=base, kinds=space.plot_kinds
    )
    md = Path(out["table_md"]).read_text()
    assert "| # | trial | setting | status |" in md and "mask.context_scale=0.4-1" in md
    assert out["trials"] == {"total": 13, "complete": 12, "unfinished": 1}
    assert out["best_metric"] == 54.0 and out["best_trial"] == "t4"  # the first of the ties, in start order
    assert Path(out["params_png"]).read_bytes()[:8] == PNG
    # mode min picks the lowest; with no full-round trial, every scored trial competes
    rows = [_row(0, "stopped early", 1, 3.0, {}), _row(1, "stopped early", 1, 2.0, {})]
    assert best_row(rows, "min", rounds=2)["trial_id"] == "t1"
    assert best_row([_row(0, "error", 0, None, {})], "max", rounds=2) is None
