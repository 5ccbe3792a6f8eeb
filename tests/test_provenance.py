"""hqjepa.provenance, and the records that bench/ and experiments/ scripts write carrying it."""

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hqjepa.provenance import command_line, git_commit, provenance

KEYS = ("commit", "command", "date")


def _check(record: dict, command: str) -> None:
    assert all(isinstance(record.get(k), str) and record[k] for k in KEYS), record
    assert record["command"] == command
    when = datetime.fromisoformat(record["date"])
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 600


def test_provenance_has_commit_command_and_utc_date():
    prov = provenance(["-m", "experiments.learning", "--seeds", "3"])
    assert set(prov) == set(KEYS)
    _check(prov, "python -m experiments.learning --seeds 3")
    # this checkout is a git work tree: a 40-hex sha, "-dirty" when tracked files changed
    sha = prov["commit"].removesuffix("-dirty")
    assert prov["commit"] == "unknown" or (len(sha) == 40 and int(sha, 16) >= 0)
    assert provenance()["command"].startswith("python ")  # this process's own command line


def test_command_is_shell_quoted_and_interpreter_independent():
    assert command_line(["bench/fqs.py", "--cuda"]) == "python bench/fqs.py --cuda"
    assert (
        command_line(["-m", "experiments.learning", "--set", "linear.lrs=[0.1, 1.0]", "--tasks", "a,b"])
        == "python -m experiments.learning --set 'linear.lrs=[0.1, 1.0]' --tasks a,b"
    )


def test_commit_is_unknown_outside_git_and_without_git(tmp_path, monkeypatch):
    assert git_commit(tmp_path) == "unknown"  # pytest's tmp_path is not inside a work tree
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all: no failure either
    assert git_commit() == "unknown"
    assert provenance(["x.py"])["commit"] == "unknown"


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_commit_is_head_and_dirty_only_for_changed_tracked_files(tmp_path):
    def git(*args: str) -> str:
        cmd = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "a")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "new.txt").write_text("untracked\n")  # untracked files do not make a tree dirty
    assert git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("2\n")
    assert git_commit(tmp_path) == head + "-dirty"
    git("add", "a.txt")  # staged but not committed: still dirty
    assert git_commit(tmp_path) == head + "-dirty"


def _results_json(path: Path, seeds: range, deltas: list[float]) -> Path:
    runs = []
    for seed, d in zip(seeds, deltas, strict=True):
        for encoder, test in (("checkpoint", 90.0 + d), ("random-init", 90.0)):
            runs.append(
                {"task": "m-brick-kiln", "protocol": "linear", "encoder": encoder, "seed": seed}
                | {"status": "ok", "test": test}
            )
    path.write_text(json.dumps({"meta": {}, "runs": runs}))
    return path


def test_pairs_lines_and_out_file_carry_provenance(tmp_path, capsys):
    from experiments import pairs

    a = _results_json(tmp_path / "a.json", range(0, 3), [0.5, 1.0, -0.2])
    b = _results_json(tmp_path / "b.json", range(3, 5), [0.3, 0.4])
    argv = [str(a), str(b), "--out", str(tmp_path / "pairs.jsonl")]
    assert pairs.main(argv) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    written = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert printed == written and len(written) == 1 and written[0]["n"] == 5
    _check(written[0], "python -m experiments.pairs " + " ".join(argv))


def test_bench_records_carry_provenance(capsys):
    from bench import gpu

    argv = ["--device", "cpu", "--sections", "fqs", "--fqs-batches", "4", "--repeats", "1"]
    assert gpu.main(argv) == 0  # the script's dry run on the CPU: FQS at batch 4
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) >= 4 and {r["bench"] for r in lines} == {"gpu", "gpu_fqs"}
    for line in lines:
        _check(line, "python -m bench.gpu " + " ".join(argv))


def test_learning_lines_and_results_json_carry_provenance(tmp_path, monkeypatch, capsys):
    """experiments.learning's per-task lines, summary and OUT/eval/results.json, with the
    pretraining and the probes replaced by stand-ins (the real ones take minutes)."""
    from experiments import learning

    monkeypatch.setattr(learning, "pretrained_encoders", lambda args, out: ([tmp_path / "export.pt"], {}))
    monkeypatch.setattr(learning, "write_geobench", lambda *a: None)
    monkeypatch.setattr(learning, "run_extract", lambda job: None)

    def run_linear(job, features):
        test = 96.0 + (0.5 if job.encoder == "checkpoint" else 0.0) + 0.1 * job.seed
        return {"task": job.task, "protocol": "linear", "encoder": job.encoder, "seed": job.seed} | {
            "status": "ok",
            "test": test,
            "valid": test,
            "lr": 0.01,
            "metric": "Accuracy",
        }

    monkeypatch.setattr(learning, "run_linear", run_linear)
    argv = ["--tasks", "m-brick-kiln", "--seeds", "2", "--out", str(tmp_path / "run")]
    assert learning.main(argv) == 0
    command = "python -m experiments.learning " + " ".join(argv)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r.get("task") for r in lines] == ["m-brick-kiln", None] and lines[1]["summary"] is True
    for line in lines:
        _check(line, command)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    _check(results, command)
    assert len(results["runs"]) == 4 and "summary" in results and "meta" in results
