"""Where a result record came from: the commit, the command line and the date.

Every JSON record that a script under `bench/` or `experiments/` writes carries the three keys
`provenance()` returns, so that a number found in a results file can be traced to the code and
the invocation that printed it:

    {"commit": "9734598b...c2", "command": "python -m experiments.learning --seeds 3",
     "date": "2026-12-03T10:15:02+00:00"}

Plain standard library (no Ray, no torch); git is asked once per call and may be missing.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

UNKNOWN = "unknown"
GIT_TIMEOUT_S = 10.0


def _git(repo: Path, *args: str) -> str | None:
    """`git -C repo args...`'s stripped stdout, or None if git is missing, fails or hangs."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(repo: str | Path | None = None) -> str:
    """HEAD's full sha of the git work tree holding `repo` (default: the one this package runs
    from, i.e. the checkout of an editable install, else the current directory), with "-dirty"
    appended when tracked files differ from HEAD (staged or not; untracked files do not count,
    as in `git describe --dirty`); "unknown" outside a work tree or without git."""
    candidates = [Path(repo)] if repo is not None else [Path(__file__).resolve().parent, Path.cwd()]
    for path in candidates:
        sha = _git(path, "rev-parse", "--verify", "HEAD")
        if not sha:
            continue
        status = _git(path, "status", "--porcelain", "--untracked-files=no")
        if status is None:
            return f"{sha}-dirty"  # cannot tell: do not claim a clean tree
        return f"{sha}-dirty" if status else sha
    return UNKNOWN


def command_line(argv: list[str] | None = None) -> str:
    """The command as one shell-quoted string, starting with a plain `python` (whichever
    interpreter ran it): `argv` is what follows the interpreter, e.g. ["-m",
    "experiments.learning", "--seeds", "3"] or ["bench/fqs.py", "--cuda"]; None takes this
    process's own (`sys.orig_argv`, which keeps `-m module` as typed; `sys.argv` before 3.10)."""
    if argv is None:
        orig = getattr(sys, "orig_argv", None)
        argv = list(orig[1:]) if orig else list(sys.argv)
    return shlex.join(["python", *argv])


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """{"commit", "command", "date"} for a result record made now.

    commit: `git_commit()` (sha of HEAD, "-dirty" with uncommitted changes to tracked files,
    "unknown" outside git); command: `command_line(argv)`; date: now, UTC, ISO 8601 to the
    second. Merge it into every record written: `json.dumps({**row, **provenance()})`.
    """
    return {
        "commit": git_commit(),
        "command": command_line(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
