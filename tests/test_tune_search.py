"""ray_jobs/tune.py end to end: a 3-trial Optuna/ASHA search over tune_spaces/masking.yaml on
synthetic pairs, probed on a small synthetic m-eurosat under linear probing and fine-tuning (Ray
tasks launched by the trials), interrupted with SIGINT after its first trial finished, then resumed
with --resume: it completes, finished trials are not re-run, the Optuna study holds exactly the
three trials, trials.csv has both protocols' scores, and the best config loads."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hqjepa.config import load_config
from hqjepa.eval.synth_geobench import write_benchmark
from tests.test_pretrain_ray import SMALL as TRAIN_SMALL

ROOT = Path(__file__).resolve().parents[1]
# the training tests' small model and data; a trial's epochs come from --budget-epochs, so 2 steps each
SMALL = [s for s in TRAIN_SMALL if not s.startswith("optim.epochs=")] + ["train.steps_per_epoch=2"]
ROUNDS = 2


def _read_rounds(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _table(exp: Path) -> list[dict]:
    with (exp / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _wait(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"tune.py did not finish in {timeout} s; log tail:\n{log.read_text()[-3000:]}")


# The search fixture runs 3 trials x 2 rounds, interrupted and resumed, each probing with Ray tasks:
# minutes of process start-up on 2 cores, more under load than pytest's default 600 s allows.
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    bench = tmp / "geobench"
    write_benchmark(bench, samples=8, seed=0, tasks=["m-eurosat"])
    storage, exp = tmp / "searches", tmp / "searches" / "masking"
    argv = [
        sys.executable,
        str(ROOT / "ray_jobs/tune.py"),
        "--space",
        str(ROOT / "tune_spaces/masking.yaml"),
        "--trials",
        "3",
        "--budget-epochs",
        "1",
        "--rounds",
        str(ROUNDS),
        "--benchmark-dir",
        str(bench),
        "--storage",
        str(storage),
        "--cache-dir",
        str(tmp / "cache"),
        "--num-cpus",
        "2",
        "--eval-set",
        "linear.epochs=2",
        "--eval-set",
        "linear.lrs=[0.01]",
        "--eval-set",
        "run.seeds=[0]",
        "--eval-set",
        "finetune.epochs=1",
        "--protocol",
        "linear,finetune",
    ]
    for s in SMALL:
        argv += ["--set", s]
    # Train v2's PlacementGroupCleaner asks Ray's state API whether the Train controller lives. With no
    # address given, that client takes /tmp/ray/ray_current_cluster, the last `ray start` head: on a machine
    # where one ran before (another test, another user) it waits on a cluster that is not ours, and every
    # Train run ends 12 s late (Ray 2.60). An embedded Ray has no dashboard, so the query cannot succeed
    # anyway: an unreachable API server makes it fail at once. Nothing else in the search uses that API.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9"}

    log1 = tmp / "first.log"
    with log1.open("w") as out:
        first = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 480
        finished: list[Path] = []
        while not (finished and len(list(exp.glob("runs/*"))) > 1):
            # interrupt once a trial has reported its last round and the next one is training
            if first.poll() is not None or time.time() > deadline:
                first.kill()
                pytest.fail(f"no trial finished (rc {first.returncode}); log tail:\n{log1.read_text()[-3000:]}")
            time.sleep(0.5)
            finished = [p for p in exp.glob("runs/*/rounds.jsonl") if len(_read_rounds(p)) == ROUNDS]
        interrupted_at = time.time()
        first.send_signal(signal.SIGINT)
        rc_first = _wait(first, log1, 180)
    before = {
        "table": _table(exp),
        "trials": {p.parent.name: p.read_text() for p in exp.glob("runs/*/rounds.jsonl")},
        "done": finished[0].parent.name,
        "metrics_mtime": (finished[0].parent / "metrics.csv").stat().st_mtime,
    }

    log2 = tmp / "resume.log"
    with log2.open("w") as out:  # the name is all --resume needs: the rest is in search.json
        resumed = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "ray_jobs/tune.py"),
                "--resume",
                "--name",
                "masking",
                "--storage",
                str(storage),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        rc_resume = _wait(resumed, log2, 600)
    return {
        "exp": exp,
        "rc_first": rc_first,
        "rc_resume": rc_resume,
        "before": before,
        "interrupted_at": interrupted_at,
        "log1": log1,
        "log2": log2,
    }


def test_three_trial_search_completes_with_a_best_config_that_loads(search):
    exp = search["exp"]
    assert search["rc_resume"] == 0, search["log2"].read_text()[-3000:]
    rows = _table(exp)
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    for r in rows:  # ASHA may stop a trial after round 1; every trial ends complete or stopped, none failed
        assert r["status"] == ("complete" if r["rounds"] == str(ROUNDS) else "stopped early"), r
        assert 0 <= float(r["geobench/m-eurosat/linear"]) <= 100
        assert 0 <= float(r["geobench/m-eurosat/finetune"]) <= 100  # --protocol linear,finetune: both
        assert 1 <= int(json.loads(r["mask.num_targets"])) <= 6
        low, high = json.loads(r["mask.target_scale"])
        assert 0.1 <= low <= 0.2 <= high <= 0.3
    best = load_config(exp / "best_config.yaml")
    best_id = next(line for line in (exp / "trials.md").read_text().splitlines() if line.startswith("Best (bold)"))
    best_row = next(r for r in rows if f"trial {r['trial_id']}," in best_id)
    assert best_row["status"] == "complete"
    assert best.mask.num_targets == json.loads(best_row["mask.num_targets"])
    assert list(best.mask.target_scale) == json.loads(best_row["mask.target_scale"])
    assert list(best.mask.context_scale) == json.loads(best_row["mask.context_scale"])
    assert best.model.embed_dim == 32 and best.optim.epochs == load_config(ROOT / "configs/tiny.yaml").optim.epochs
    for png in ("params.png", "history.png"):
        assert (exp / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_search_resumes_without_rerunning_finished_trials(search):
    exp, before = search["exp"], search["before"]
    assert search["rc_first"] == 130, search["log1"].read_text()[-3000:]  # interrupted, state saved
    statuses = {r["trial_id"]: r["status"] for r in before["table"]}
    assert statuses[before["done"]] == "complete" and "unfinished" in statuses.values()

    done = before["done"]  # the trial finished before the interrupt: not a line, not a step added
    assert (exp / "runs" / done / "rounds.jsonl").read_text() == before["trials"][done]
    assert all(r["time"] < search["interrupted_at"] for r in _read_rounds(exp / "runs" / done / "rounds.jsonl"))
    assert (exp / "runs" / done / "metrics.csv").stat().st_mtime == before["metrics_mtime"]
    assert len((exp / f"trial_{done}" / "progress.csv").read_text().splitlines()) == 1 + ROUNDS

    table = _table(exp)
    assert [int(r["number"]) for r in table] == [0, 1, 2] and table[0]["trial_id"] == done  # start order
    rows = {r["trial_id"]: r for r in table}
    assert set(statuses) <= set(rows)  # the unfinished trial kept its id and its parameters
    for trial_id, row in rows.items():  # every round ran exactly once, in order, one Train run per trial
        rounds = _read_rounds(exp / "runs" / trial_id / "rounds.jsonl")
        assert [r["round"] for r in rounds] == list(range(1, int(row["rounds"]) + 1)), trial_id
        assert [r["steps"] for r in rounds] == [1, 2][: len(rounds)]
        with (exp / "runs" / trial_id / "metrics.csv").open() as f:
            steps = [int(float(r["step"])) for r in csv.DictReader(f)]
        assert steps == list(range(rounds[-1]["steps"])), (trial_id, steps)  # continued, never restarted

    with sqlite3.connect(exp / "optuna.db") as db:  # the study optuna-dashboard opens: 3 trials, each told once
        states = db.execute(
            "SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
            "WHERE s.study_name = 'masking' ORDER BY t.number"
        ).fetchall()
    assert states == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
