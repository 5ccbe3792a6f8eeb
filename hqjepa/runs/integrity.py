"""Checkpoint integrity: a content hash written last, verification, and the newest checkpoint that verifies.

A checkpoint directory carries `checksums.json` = {"format", "files": {relative path: {"sha256", "bytes"}}}
over every other file in it, written after all of them (atomically). So:
- no `checksums.json`: the write was torn (the process or the disk stopped before the end), or
  the checkpoint was written before checksums existed;
- a listed file missing, of another size or another hash: truncated or corrupted afterwards.
Either way `verify_dir` names the first problem and the checkpoint is not used.

Checkpoints of a run are its `step_<step>` directories (`step_0000040`, and `step_0000040-1` when a
directory of that name already existed, see `checkpoint_dir_name`); `checkpoints_newest_first` lists
them on a local path or any pyarrow filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

CHECKSUMS = "checksums.json"
FORMAT = "hqjepa-checksums/1"
_STEP_DIR = re.compile(r"^step_(\d+)(?:-(\d+))?$")


class CorruptCheckpoint(RuntimeError):
    """A checkpoint that fails verification; the message names the directory and the problem."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: str | Path) -> Path:
    """Hash every file under `directory` and write `checksums.json` last (temporary file, fsync,
    rename). Call it after every other file of the checkpoint is written and closed."""
    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in _files(directory)
    }
    out = directory / CHECKSUMS
    tmp = directory / f".{CHECKSUMS}.tmp"
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def verify_dir(directory: str | Path) -> None:
    """Check a local checkpoint directory against its `checksums.json`; CorruptCheckpoint if it fails."""
    directory = Path(directory)
    manifest = directory / CHECKSUMS
    if not manifest.is_file():
        raise CorruptCheckpoint(f"{directory}: no {CHECKSUMS} (a torn write, or written before checksums existed)")
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpoint(f"{directory}: unreadable {CHECKSUMS} ({type(e).__name__})") from None
    if not listed:
        raise CorruptCheckpoint(f"{directory}: {CHECKSUMS} lists no files")
    for rel, want in sorted(listed.items()):
        p = directory / rel
        if not p.is_file():
            raise CorruptCheckpoint(f"{directory}: {rel} is missing")
        size = p.stat().st_size
        if size != want["bytes"]:
            raise CorruptCheckpoint(f"{directory}: {rel} has {size} bytes, {want['bytes']} were written")
        if sha256_file(p) != want["sha256"]:
            raise CorruptCheckpoint(f"{directory}: {rel} does not match its sha256")


def is_verified(directory: str | Path) -> bool:
    """`verify_dir` as a boolean."""
    try:
        verify_dir(directory)
    except CorruptCheckpoint:
        return False
    return True


def step_of(name: str) -> tuple[int, int] | None:
    """(step, attempt) of a checkpoint directory name: `step_0000040` -> (40, 0),
    `step_0000040-2` -> (40, 2); None for any other name."""
    m = _STEP_DIR.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def checkpoints_newest_first(fs, run_path: str) -> list[str]:
    """Paths (within pyarrow filesystem `fs`) of the `step_*` directories directly under
    `run_path`, newest (highest step, then attempt) first."""
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(run_path, allow_not_found=True, recursive=False))
    except FileNotFoundError:
        return []
    named = [(step_of(i.base_name), i.path) for i in infos if i.type == pafs.FileType.Directory]
    return [path for key, path in sorted((k, p) for k, p in named if k is not None)[::-1]]


def checkpoint_dir_name(step: int, existing: set[str] | list[str]) -> str:
    """`step_{step:07d}`, or with `-1`, `-2`, ... when that name is taken in the run directory
    (by a checkpoint of an earlier attempt that was not used, e.g. one that failed verification):
    a checkpoint is never written into a directory another one occupies."""
    base = f"step_{step:07d}"
    taken = set(existing)
    if base not in taken:
        return base
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
