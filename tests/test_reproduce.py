"""ray_jobs/reproduce.py: the paper's tables as one command each. The dry run plans every (row, seed)
with the loss weights that make the row, paired by optim.seed, and prices it; a small real Table 2
(two rows, a few steps, one task, linear probing on the synthetic GeoBench) writes the table with the
paper's line beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hqjepa import paper_results
from hqjepa.eval.synth_geobench import write_benchmark
from tests.test_pretrain_ray import SMALL

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


def _dry(capsys, *argv: str) -> tuple[list[dict], dict]:
    from ray_jobs.reproduce import main

    assert main([*argv, "--dry-run"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [x for x in lines if "row" in x], next(x["estimate"] for x in lines if "estimate" in x)


def test_table2_dry_run_lists_nine_rows_per_seed_paired_by_seed(capsys):
    runs, cost = _dry(capsys, "table2", "--config", TINY, "--seeds", "3")
    rows = [r.name for r in paper_results.TABLE2] + ["L_pred + L_cm + L_sig + L_fqs (loss.fqs_mode: siamese)"]
    assert len(runs) == 27 and [r["row"] for r in runs[:9]] == rows
    for seed in range(3):  # every row once per seed, each with optim.seed = that seed
        mine = [r for r in runs if r["seed"] == seed]
        assert [r["row"] for r in mine] == rows and {r["overrides"]["optim.seed"] for r in mine} == {seed}
    by_row = {r["row"]: r["overrides"] for r in runs if r["seed"] == 0}
    assert by_row["L_pred"] == {"loss.w_cm": 0.0, "loss.w_sig": 0.0, "loss.w_fqs": 0.0, "optim.seed": 0}
    assert by_row["L_pred + L_sig + L_fqs"] == {
        "loss.w_cm": 0.0,
        "loss.w_sig": 0.05,
        "loss.w_fqs": 0.1,
        "optim.seed": 0,
    }
    assert by_row[rows[7]] == {"loss.w_cm": 1.0, "loss.w_sig": 0.05, "loss.w_fqs": 0.1, "optim.seed": 0}
    assert by_row[rows[8]]["loss.fqs_mode"] == "siamese"
    assert cost["runs"] == 27 and cost["samples"] > 0 and cost["gpu_hours"] > 0 and cost["cpu_hours"] > 0


def test_table1_and_table3_dry_runs_price_the_paper_config(capsys):
    runs, cost = _dry(capsys, "table1", "--seeds", "1")  # configs/paper.yaml, no shards here
    assert [r["row"] for r in runs] == ["HQ-JEPA"]
    # 237,871 pairs, global batch 512 x 2, 400 epochs: 232 x 400 steps at 2,084 samples/s
    assert cost["steps"] == 232 * 400 and cost["gpu_hours"] == pytest.approx(232 * 400 * 1024 / 2084 / 3600, abs=0.01)
    runs, cost = _dry(capsys, "table3", "--seeds", "1")
    assert len(runs) == 13 and runs[0]["row"] == "default"
    assert {r["overrides"]["model.depth"] for r in runs} == {4, 6, 8, 10}
    assert cost["gpu_hours"] == pytest.approx(13 * 232 * 400 * 1024 / 2084 / 3600, abs=0.05)  # docs: 165 h


def test_a_row_that_does_not_exist_is_one_line_exit_2(capsys):
    from ray_jobs.reproduce import main

    assert main(["table2", "--config", TINY, "--rows", "L_sig alone", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rows 'L_sig alone': no such row" in err


def test_a_small_table2_run_writes_the_table_beside_the_papers(ray_local, tmp_path, capsys):
    from ray_jobs.reproduce import main

    bench = tmp_path / "geobench"
    write_benchmark(bench, samples=8, seed=0, tasks=["m-eurosat"])
    argv = ["table2", "--config", TINY, "--rows", "1,4", "--seeds", "1", "--tasks", "m-eurosat"]
    argv += ["--protocol", "linear", "--benchmark-dir", str(bench), "--out", str(tmp_path / "out")]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--set", "train.max_steps=2"]
    for s in SMALL:
        argv += ["--set", s]
    for s in ("linear.epochs=2", "linear.lrs=[0.01]"):
        argv += ["--eval-set", s]
    assert main(argv) == 0, capsys.readouterr().out[-3000:]
    table = (tmp_path / "out" / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| row | source | m-eurosat LP |"
    ours = {line.split(" | ")[0][2:]: line for line in lines if " | ours | " in line}
    assert set(ours) == {"L_pred", "L_pred + L_fqs"}
    for row in ours.values():  # one seed: the score itself, a percentage
        assert 0 <= float(row.split(" | ")[2].rstrip(" |")) <= 100
    paper = [line for line in lines if " | paper | " in line]
    assert [p.split(" | ")[2].rstrip(" |") for p in paper] == ["76.85", "80.03"]  # Table 2, m-eurosat LP
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["row"] for r in results["runs"]] == ["L_pred", "L_pred + L_fqs"]
    assert results["runs"][0]["overrides"]["loss.w_fqs"] == 0.0 and results["runs"][1]["overrides"]["loss.w_fqs"] > 0
    assert {r["status"] for r in results["records"]} == {"ok"} and results["commit"]
    for row in ("L_pred", "L_pred + L_fqs"):
        assert results["cells"][row]["m-eurosat"]["linear"]["n"] == 1
    assert (tmp_path / "out" / "runs" / "L_pred-seed0" / "export.pt").exists()
