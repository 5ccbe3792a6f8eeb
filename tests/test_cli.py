"""The installed `hqjepa` command (the console script of `pip install`), run as a user runs it: every
Ray driver and library command is there, each takes its driver's options, and a bad value is one line
on stderr with exit code 2 before any Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HQJEPA = Path(sys.executable).parent / "hqjepa"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HQJEPA), *args], cwd=cwd, capture_output=True, text=True, timeout=180)


def test_the_command_is_installed_and_lists_every_job(tmp_path):
    assert HQJEPA.exists(), "the console script is missing: pip install -e . makes it"
    out = _run("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for command in ("convert", "pretrain", "evaluate", "tune", "reproduce", "export", "pretrain-local"):
        assert f"\n    {command} " in out.stdout or f"\n    {command}\n" in out.stdout, command


@pytest.mark.parametrize(
    ("command", "args", "error"),  # the start of the one line
    [
        ("pretrain", ["--set", "optim.lr=abc"], "pretrain: error: optim.lr = 'abc': must be a number in (0, inf)"),
        ("pretrain", ["--workers", "0"], "pretrain: error: --workers 0: must be >= 1"),
        ("pretrain", ["--workers", "x"], "hqjepa pretrain: error: argument --workers: invalid int value: 'x'"),
        ("tune", ["--space", "missing.yaml"], "tune: error: search space missing.yaml does not exist"),
        ("evaluate", ["--seeds", "2"], "hqjepa evaluate: error: the following arguments are required: --checkpoint"),
        ("reproduce", ["table4"], "hqjepa reproduce: error: argument table: invalid choice: 'table4'"),
        ("export", [], "hqjepa export: error: the following arguments are required: src, --out"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2_from_outside_the_repository(tmp_path, command, args, error):
    """Run from an empty directory: the installed command does not need the checkout as its cwd."""
    out = _run(command, *args, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(error), out.stderr


def test_reproduce_dry_run_through_the_installed_command(tmp_path):
    out = _run("reproduce", "table2", "--seeds", "2", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    planned = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"table"')]
    assert len(planned) == 18 and {p["seed"] for p in planned} == {0, 1}
