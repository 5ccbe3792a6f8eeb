"""The Table-1-shaped report: mean ± std over seeds, partial and failed cells with their notes."""

from __future__ import annotations

import json

import pytest

from hqjepa.eval.report import markdown_table, summarize, write_report


def rec(task, protocol, seed, test=None, encoder="checkpoint", error=None):
    ok = error is None
    return {
        "task": task,
        "protocol": protocol,
        "encoder": encoder,
        "seed": seed,
        "status": "ok" if ok else "error",
        "test": test,
        "valid": test,
        "error": error,
    }


RECORDS = [
    rec("m-eurosat", "linear", 0, 80.0),
    rec("m-eurosat", "linear", 1, 84.0),
    rec("m-eurosat", "linear", 2, 82.0),
    rec("m-so2sat", "linear", 0, 40.0),
    rec("m-so2sat", "linear", 1, 44.0),
    rec("m-so2sat", "linear", 2, error="m-so2sat / linear / checkpoint / seed 2: RuntimeError: out of memory"),
    rec("m-cashew-plant", "linear", 0, error="m-cashew-plant / linear / checkpoint / seed 0: GeoBenchFormatError: x"),
    rec("m-eurosat", "finetune", 0, 95.5, encoder="random-init"),
]


def test_summary_mean_and_sample_std():
    s = summarize(RECORDS)
    cell = s["checkpoint"]["linear"]["m-eurosat"]
    assert cell["mean"] == pytest.approx(82.0) and cell["std"] == pytest.approx(2.0)  # ddof = 1
    assert s["checkpoint"]["linear"]["m-so2sat"]["n"] == 2 and s["checkpoint"]["linear"]["m-so2sat"]["n_runs"] == 3
    assert s["random-init"]["finetune"]["m-eurosat"]["std"] == 0.0


def test_table_layout_and_error_notes():
    table = markdown_table(RECORDS, {"checkpoint": "HQ-JEPA"})
    lines = table.splitlines()
    assert lines[0] == "| Method | Setting | m-eurosat Acc. (%) | m-so2sat Acc. (%) | m-cashew Jaccard (%) |"
    assert lines[2] == "| HQ-JEPA | Linear probing | 82.00 ± 2.00 | 42.00 ± 2.83 (2/3 seeds) [1] | error [2] |"
    assert lines[3] == "| random-init | Fine-tuning | 95.50 ± 0.00 | - | - |"
    assert "[1] m-so2sat / linear / checkpoint / seed 2: RuntimeError: out of memory" in lines
    assert "[2] m-cashew-plant / linear / checkpoint / seed 0: GeoBenchFormatError: x" in lines


def test_write_report(tmp_path):
    paths = write_report(tmp_path, RECORDS, {"checkpoint": "c.pt"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["units"] == "percent" and len(data["runs"]) == len(RECORDS) and data["meta"]["checkpoint"] == "c.pt"
    assert [r["task"] for r in data["runs"]][:3] == ["m-eurosat"] * 3  # the paper's task order
    assert open(paths["chart"], "rb").read(4) == b"\x89PNG"
